"""run_code.py end to end through the real SDK, against a fake E2B API on loopback (no sandbox).

The fake `e2b-local` on PATH reports the fake API as a running server, so this also covers the
script's local-backend path. Real sandboxes are covered by the suite that runs against e2b-local.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_e2b_api import BIG_OUTPUT_CHARS, FakeE2BApi
from .snippets import SCRIPTS
from .test_backend import write_fake_e2b_local

# One script run against the loopback fake: SDK import plus a few local requests.
RUN_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def api() -> Iterator[FakeE2BApi]:
    with FakeE2BApi() as fake:
        yield fake


@pytest.fixture
def runner(api: FakeE2BApi, tmp_path: Path):
    bin_dir = tmp_path / "bin"
    state = tmp_path / "running"
    state.touch()
    write_fake_e2b_local(bin_dir, state, port=int(api.url.rsplit(":", 1)[1]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def run(*args: str, stdin: str | None = None) -> tuple[int, dict | None, str]:
        result = subprocess.run(
            [sys.executable, str(SCRIPTS / "run_code.py"), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            input=stdin,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        payload = json.loads(result.stdout) if result.stdout.strip() else None
        return result.returncode, payload, result.stderr

    run.cwd = cwd  # type: ignore[attr-defined]
    return run


def test_prints_json_with_the_output_and_kills_the_sandbox(api: FakeE2BApi, runner) -> None:
    code, out, err = runner("--code", "print(6*7)")
    assert code == 0, err
    assert out["stdout"] == "42\n"
    assert out["backend"] == "local"
    assert out["error"] is None and out["kept"] is False
    assert out["language"] == "python"
    assert out["sandbox_id"] in api.state.killed
    assert "backend: e2b-local at" in err and "killed sandbox" in err
    assert api.state.executions[-1]["code"] == "print(6*7)"


def test_code_from_stdin(runner) -> None:
    code, out, _ = runner(stdin="print(3*5)")
    assert code == 0
    assert out["stdout"] == "15\n"


def test_an_exception_in_the_code_exits_1_with_the_error(api: FakeE2BApi, runner) -> None:
    code, out, err = runner("--code", "RAISE")
    assert code == 1
    assert out["error"]["name"] == "ValueError" and out["error"]["value"] == "bad value"
    assert out["stderr"] == "about to fail\n"
    assert out["sandbox_id"] in api.state.killed
    assert "Traceback" not in err


def test_images_are_written_to_files(runner) -> None:
    code, out, _ = runner("--code", "PLOT", "--output-dir", "plots")
    assert code == 0
    assert out["text"] == "'done'"
    image = next(r for r in out["results"] if "png" in r.get("files", {}))
    path = Path(runner.cwd) / image["files"]["png"]
    assert path.read_bytes().startswith(b"\x89PNG")
    assert "png" not in image  # no base64 in the JSON
    assert image["is_main_result"] is False


def test_long_output_is_clipped_with_a_count(runner) -> None:
    code, out, _ = runner("--code", "BIG", "--max-output", "1000")
    assert code == 0
    assert out["truncated"]["stdout"] == BIG_OUTPUT_CHARS - 1000
    assert len(out["stdout"]) < 1100


def test_env_language_and_timeout_reach_the_api(api: FakeE2BApi, runner) -> None:
    code, out, _ = runner("--code", "1", "--env", "A=1", "--env", "B=two", "--language", "javascript")
    assert code == 0
    request = api.state.executions[-1]
    assert request["env_vars"] == {"A": "1", "B": "two"}
    assert request["language"] == "javascript"
    assert out["language"] == "javascript"


def test_upload_then_download(api: FakeE2BApi, runner) -> None:
    (runner.cwd / "in.csv").write_text("a,b\n1,2\n")
    code, out, err = runner(
        "--code",
        "1",
        "--upload",
        "in.csv:/home/user/in.csv",
        "--download",
        "/home/user/in.csv:copies/out.csv",
    )
    assert code == 0, err
    assert out["uploaded"] == [{"local": "in.csv", "remote": "/home/user/in.csv"}]
    assert (runner.cwd / "copies" / "out.csv").read_text() == "a,b\n1,2\n"
    assert out["downloaded"][0]["bytes"] == 8


def test_missing_download_exits_4_but_still_reports(runner) -> None:
    code, out, _ = runner("--code", "1", "--download", "/home/user/nothing.txt:x.txt")
    assert code == 4
    assert out["downloaded"][0]["error"].startswith("file not found")
    assert out["text"] == "ok"


def test_keep_and_reuse(api: FakeE2BApi, runner) -> None:
    code, out, err = runner("--code", "1", "--keep")
    assert code == 0 and out["kept"] is True
    sandbox_id = out["sandbox_id"]
    assert sandbox_id in api.state.sandboxes and sandbox_id not in api.state.killed
    assert "left running" in err

    code, out, err = runner("--code", "1", "--sandbox-id", sandbox_id)
    assert code == 0, err
    assert out["sandbox_id"] == sandbox_id and out["kept"] is True
    assert sandbox_id in api.state.sandboxes, "a reused sandbox must not be killed"


def test_unknown_sandbox_id_exits_4(runner) -> None:
    code, out, err = runner("--code", "1", "--sandbox-id", "does-not-exist")
    assert code == 4
    assert out is None
    assert "sandbox not found" in err and "fix:" in err
    assert "Traceback" not in err
