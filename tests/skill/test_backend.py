"""Unit tests of scripts/sandbox_backend.py: helpers, error mapping and backend selection.

Choosing E2B cloud is checked here; finding or starting e2b-local is tested against the real server
in tests/skill/test_backend_selection.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sandbox_backend as sb


def test_clip_keeps_head_and_tail() -> None:
    text = "".join(f"{i:04d}\n" for i in range(1000))
    clipped, cut = sb.clip(text, 100)
    assert cut == len(text) - 100
    assert clipped.startswith("0000\n") and clipped.endswith("0999\n")
    assert f"[{cut} characters cut]" in clipped
    assert sb.clip("short", 100) == ("short", 0)
    assert sb.clip(None, 10) == (None, 0)


def test_parse_pairs() -> None:
    assert sb.parse_pairs(["A=1", "B=x=y", "EMPTY="], "--env") == {"A": "1", "B": "x=y", "EMPTY": ""}
    assert sb.parse_pairs(None, "--env") == {}
    with pytest.raises(sb.ScriptError) as info:
        sb.parse_pairs(["NOEQUALS"], "--env")
    assert info.value.code == sb.EXIT_USAGE


def test_split_pair_takes_the_remote_side_without_colons() -> None:
    assert sb.split_pair("C:/data/x.csv:/home/user/x.csv", "--upload", remote_first=False) == (
        "C:/data/x.csv",
        "/home/user/x.csv",
    )
    assert sb.split_pair("/home/user/out.png:plots/a:b.png", "--download", remote_first=True) == (
        "/home/user/out.png",
        "plots/a:b.png",
    )
    with pytest.raises(sb.ScriptError):
        sb.split_pair("no-colon", "--upload", remote_first=False)


def test_upload_plan_for_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("1")
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "a.txt").write_text("a")
    (tmp_path / "dir" / "sub" / "b.txt").write_text("b")
    assert sb.upload_plan(str(tmp_path / "one.txt"), "/home/user/x.txt") == [(tmp_path / "one.txt", "/home/user/x.txt")]
    plan = sb.upload_plan(str(tmp_path / "dir"), "/home/user/dir/")
    assert [remote for _, remote in plan] == ["/home/user/dir/a.txt", "/home/user/dir/sub/b.txt"]
    with pytest.raises(sb.ScriptError) as info:
        sb.upload_plan(str(tmp_path / "missing"), "/x")
    assert info.value.code == sb.EXIT_USAGE


def test_to_jsonable_handles_sdk_types() -> None:
    from datetime import UTC, datetime

    from e2b import SandboxMetrics, SandboxState

    sample = SandboxMetrics(1, 2.5, 10, 5, 100, 50, 0, datetime(2026, 1, 2, tzinfo=UTC))
    data = sb.to_jsonable({"m": sample, "s": SandboxState.RUNNING, "b": b"\x00"})
    assert data["m"]["timestamp"] == "2026-01-02T00:00:00+00:00"
    assert data["s"] == "running"
    assert data["b"] == "AA=="


@pytest.mark.parametrize(
    ("factory", "code"),
    [
        (lambda e: e.AuthenticationException("bad key"), sb.EXIT_BACKEND),
        (lambda e: e.SandboxNotFoundException("Sandbox x not found"), sb.EXIT_NOT_FOUND),
        (lambda e: e.SandboxNotRunningException("was not found"), sb.EXIT_NOT_FOUND),
        (lambda e: e.FileNotFoundException("path '/x' does not exist"), sb.EXIT_NOT_FOUND),
        (lambda e: e.TimeoutException("Execution timed out"), sb.EXIT_TIMEOUT),
        (lambda e: e.SandboxUnreachableException("port is not open"), sb.EXIT_TIMEOUT),
        (lambda e: e.RateLimitException("slow down"), sb.EXIT_TIMEOUT),
        (lambda e: e.ServiceBusyException("busy"), sb.EXIT_TIMEOUT),
        (lambda e: e.InvalidArgumentException("bad"), sb.EXIT_USAGE),
        (lambda e: e.GuestUnresponsiveException("wedged"), sb.EXIT_BACKEND),
        (lambda e: e.SandboxException("500: boom"), sb.EXIT_BACKEND),
        (lambda e: ConnectionRefusedError("refused"), sb.EXIT_BACKEND),
        (lambda e: RuntimeError("surprise"), sb.EXIT_BACKEND),
    ],
)
def test_errors_map_to_documented_exit_codes(factory, code: int) -> None:
    import e2b

    exit_code, message, _fix = sb.describe_error(factory(e2b))
    assert exit_code == code
    assert message and "\n" not in message


def test_httpx_connect_error_is_a_backend_error() -> None:
    import httpx

    code, message, fix = sb.describe_error(httpx.ConnectError("Connection refused"))
    assert code == sb.EXIT_BACKEND
    assert "cannot reach" in message and fix


def test_key_in_environment_selects_cloud(clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("E2B_API_KEY", "e2b_" + "1" * 40)
    backend = sb.select_backend(None)
    assert backend.kind == "cloud"
    assert backend.api_url == "https://api.e2b.app"
    assert "backend: E2B cloud (https://api.e2b.app)" in capsys.readouterr().err


def test_key_in_dotenv_selects_cloud(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dotenv")
    (clean_env / ".env").write_text("E2B_API_KEY=e2b_" + "2" * 40 + "\nE2B_DOMAIN=example.org\n")
    backend = sb.select_backend(None)
    assert backend.kind == "cloud"
    assert backend.api_url == "https://api.example.org"
    assert os.environ["E2B_API_KEY"].endswith("2" * 40)


def test_cloud_flag_without_key_is_a_clear_error(clean_env: Path) -> None:
    with pytest.raises(sb.ScriptError) as info:
        sb.select_backend("cloud")
    assert info.value.code == sb.EXIT_BACKEND
    assert "E2B_API_KEY" in info.value.message
    assert info.value.fix and "e2b.dev" in info.value.fix
