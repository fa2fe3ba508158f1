"""The server's own lifecycle: the CLI contract, and sandboxes surviving a stop or crash of the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOTFS_CACHE, _free_port, our_cgroups, server_prefix, start_server, stop_server
from e2b import Sandbox


def cli(home: Path, *args: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "E2B_LOCAL_HOME": str(home), "E2B_LOCAL_ROOTFS": ROOTFS_CACHE}
    if port:
        env["E2B_LOCAL_PORT"] = str(port)
    return subprocess.run([sys.executable, "-m", "e2b_local", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def test_cli_start_env_status_stop(tmp_path: Path) -> None:
    home, port = tmp_path / "home", _free_port()
    assert cli(home, "status").returncode == 3
    assert cli(home, "env").returncode == 3
    started = cli(home, "start", port=port)
    assert started.returncode == 0, started.stderr
    try:
        key = (home / "api-key").read_text().strip()
        assert key.startswith("e2b_") and len(key) == 44
        assert (home / "api-key").stat().st_mode & 0o777 == 0o600
        assert cli(home, "start", port=port).returncode == 0  # already running: a no-op
        exports = cli(home, "env").stdout.strip()
        url = f"http://127.0.0.1:{port}"
        assert exports == f"export E2B_API_URL={url} E2B_SANDBOX_URL={url} E2B_VOLUME_API_URL={url} E2B_API_KEY={key}"
        env = json.loads(cli(home, "env", "--json").stdout)
        status = json.loads(cli(home, "status").stdout)
        assert status["running"] is True and status["port"] == port and status["sandboxes"] == 0
        script = "from e2b import Sandbox; s = Sandbox.create(); print(s.commands.run('echo hi').stdout); s.kill()"
        shell = subprocess.run(["bash", "-c", f'eval "$({sys.executable} -m e2b_local env)" && '
                                              f'{sys.executable} -c "{script}"'],
                               capture_output=True, text=True, env={**os.environ, "E2B_LOCAL_HOME": str(home)},
                               timeout=120)
        assert shell.stdout.strip() == "hi", shell.stderr
        assert env["E2B_API_KEY"] == key
    finally:
        stopped = cli(home, "stop")
    assert stopped.returncode == 0
    assert cli(home, "status").returncode == 3
    # No sandbox was left registered, so nothing of this server may outlive it (its warm pool included).
    assert our_cgroups(server_prefix(home)) == set()


def test_help_shows_examples() -> None:
    out = subprocess.run([sys.executable, "-m", "e2b_local", "--help"], capture_output=True, text=True).stdout
    for command in ("serve", "start", "stop", "status", "env"):
        assert command in out
    assert "examples:" in out


@pytest.mark.parametrize("how", ["stop", "crash"])
def test_sandboxes_survive_server_restart(tmp_path: Path, how: str) -> None:
    home, port = tmp_path / "home", _free_port()
    server = start_server(home, port)
    env = server.sdk
    sandbox = Sandbox.create(timeout=600, metadata={"restart": how}, **env)
    try:
        sandbox.commands.run("echo kept > /home/user/file.txt")
        # Written to a temporary file and renamed, so that a reader never sees it empty mid-write.
        counter = sandbox.commands.run("i=0; while true; do i=$((i+1)); echo $i > /tmp/count.tmp; "
                                       "mv /tmp/count.tmp /tmp/count; sleep 0.1; done",
                                       background=True)
        time.sleep(0.5)
        if how == "stop":
            server.process.send_signal(signal.SIGTERM)
        else:
            os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        before = int(subprocess.run(["cat", f"/proc/{sandbox_pid(home, sandbox.sandbox_id)}/status"],
                                    capture_output=True).returncode == 0)
        assert before == 1, "the sandbox died with the server"
        server = start_server(home, port)
        again = Sandbox.connect(sandbox.sandbox_id, **env)
        listed = Sandbox.list(**env).next_items()
        assert [s.sandbox_id for s in listed] == [sandbox.sandbox_id]
        assert listed[0].metadata == {"restart": how}
        assert again.commands.run("cat /home/user/file.txt").stdout == "kept\n"
        first = int(again.commands.run("cat /tmp/count").stdout)
        time.sleep(0.5)
        assert int(again.commands.run("cat /tmp/count").stdout) > first  # the process kept running
        assert counter.pid in [p.pid for p in again.commands.list()]
    finally:
        Sandbox.kill(sandbox.sandbox_id, **env)
        stop_server(server)


def sandbox_pid(home: Path, sandbox_id: str) -> int:
    """The host pid of a sandbox, from the server's registry."""
    import sqlite3

    with sqlite3.connect(home / "registry.sqlite3") as db:
        (record,) = db.execute("SELECT record FROM sandboxes WHERE sandbox_id = ?", (sandbox_id,)).fetchone()
    return json.loads(record)["pid"]


def test_health_is_open_but_api_needs_the_key(e2b_server) -> None:
    assert httpx.get(e2b_server.url + "/health").status_code == 200
    assert httpx.get(e2b_server.url + "/v2/sandboxes").status_code == 401


def test_idle_connections_are_let_go_by_the_client_side_first() -> None:
    """Whoever closes an idle keep-alive connection first races the other side's next request on it."""
    import e2b.api

    from e2b_local import cli
    from e2b_local.agent import __main__ as agent_main
    from e2b_local.control.fleet import upstream

    assert e2b.api.pool_idle_timeout < cli.KEEP_ALIVE_SECONDS  # SDK -> server
    assert agent_main.KEEP_ALIVE_SECONDS > upstream.IDLE_SECONDS  # server -> agent
