"""The scripts' backend selection against the real e2b-local command: find it, start it, or fail clearly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _free_port

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS_DIR) not in sys.path:
    sys.path.insert(0, str(SCRIPTS_DIR))

import sandbox_backend as sb  # noqa: E402


def test_no_key_starts_e2b_local(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = clean_env / "home"
    port = _free_port()
    os.environ.update(E2B_LOCAL_HOME=str(home), E2B_LOCAL_PORT=str(port))
    try:
        backend = sb.select_backend(None)
        assert backend.kind == "local"
        assert os.environ["E2B_API_URL"] == os.environ["E2B_SANDBOX_URL"] == f"http://127.0.0.1:{port}"
        assert os.environ["E2B_API_KEY"] == (home / "api-key").read_text().strip()
        err = capsys.readouterr().err
        assert "starting it in the background" in err
        assert f"backend: e2b-local at http://127.0.0.1:{port} (started it in the background)" in err
    finally:
        subprocess.run([sys.executable, "-m", "e2b_local", "stop"], env=dict(os.environ), capture_output=True)


def test_running_server_is_reused_and_local_wins_over_a_key(
    clean_env: Path, e2b_server, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ.update(E2B_LOCAL_HOME=str(e2b_server.home), E2B_API_KEY="e2b_" + "3" * 40)
    assert sb.select_backend("local").kind == "local"
    assert os.environ["E2B_API_KEY"] == e2b_server.api_key  # the local server's key replaced it
    assert os.environ["E2B_API_URL"] == e2b_server.url
    err = capsys.readouterr().err
    assert "(already running)" in err and err.count("backend:") == 1


def test_failed_start_is_a_clear_error(clean_env: Path) -> None:
    with socket.socket() as taken:  # something else holds the port, so the server cannot listen
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        os.environ.update(E2B_LOCAL_HOME=str(clean_env / "home"), E2B_LOCAL_PORT=str(taken.getsockname()[1]))
        with pytest.raises(sb.ScriptError) as info:
            sb.select_backend(None)
    assert info.value.code == sb.EXIT_BACKEND
    assert "e2b-local start" in info.value.message
    assert "E2B_API_KEY" in (info.value.fix or "")
