"""A full data directory: each lifecycle call happens completely or not at all, with a clear error.

The server's data directory is a small tmpfs mounted by the test and filled with a file the test
writes (the root filesystem cache stays where it is). After each call on the full disk, the same
connection must still answer; after space is freed and the server restarted (by `kill -9`), the
registry and the sandboxes' processes must agree with what the client was told.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LocalServer, _free_port, our_cgroups, server_prefix, start_server, stop_server
from e2b import Sandbox

from e2b_local.isolation.cgroups import SandboxCgroup

# Small sandbox disks: their images are sparse files in the data directory.
SERVER_ENV = {"E2B_LOCAL_DISK_MB": "32"}
TMPFS_SIZE = "256m"
CLEAR_ERROR = "data directory"
# Failed calls whose tracebacks must all reach the log: more than the slack of its last page holds.
REPEATS = 5


@dataclass
class Setup:
    """A server on a tmpfs data directory, restartable on the same port."""

    home: Path
    port: int
    server: LocalServer

    @property
    def sdk(self) -> dict[str, str]:
        return self.server.sdk

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def call(self, conn: http.client.HTTPConnection, method: str, path: str,
             body: dict[str, object] | None = None) -> tuple[int, str]:
        """One request on `conn` (kept alive: http.client never reconnects a connection the server closed)."""
        headers = {"X-API-Key": self.server.api_key, "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body or {}), headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()

    def crash_and_restart(self) -> None:
        os.kill(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait(timeout=30)
        self.server = start_server(self.home, self.port, env=SERVER_ENV)

    def listed(self) -> dict[str, str]:
        """Sandbox id -> state, as the API lists them."""
        return {s.sandbox_id: s.state.value for s in Sandbox.list(**self.sdk).next_items()}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(home)], check=True)
    # Private: an unmount here must not depend on the copies other mount namespaces made of it.
    subprocess.run(["mount", "--make-private", str(home)], check=True)
    try:
        port = _free_port()
        state = Setup(home, port, start_server(home, port, env=SERVER_ENV))
        try:
            yield state
        finally:
            (home / "filler").unlink(missing_ok=True)
            stop_server(state.server)
            close_files_under(home)
    finally:
        # Sandboxes of other servers that started meanwhile hold copies of the mount in their namespaces.
        if subprocess.run(["umount", str(home)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(home)], check=True)


def close_files_under(home: Path) -> None:
    """Let go of this process's open files in `home` (start_server keeps each server's log open).

    Each descriptor is pointed at /dev/null rather than closed: the file object that owns it closes
    it later, and must not close a number reused meanwhile.
    """
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(home) + "/"):
                os.dup2(null, int(fd))
    finally:
        os.close(null)


def fill(home: Path) -> None:
    """Write a file until the data directory has no byte left."""
    fd = os.open(home / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = b"\xff" * size
            while True:
                try:
                    if os.write(fd, chunk) < size:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert os.statvfs(home).f_bavail == 0


def free(home: Path) -> None:
    (home / "filler").unlink()


def record_of(home: Path, sandbox_id: str) -> dict[str, object]:
    with sqlite3.connect(home / "registry.sqlite3") as db:
        (text,) = db.execute("SELECT record FROM sandboxes WHERE sandbox_id = ?", (sandbox_id,)).fetchone()
    return json.loads(text)


def processes(key: str) -> list[int]:
    return SandboxCgroup(key).pids()


def frozen(key: str) -> bool:
    return SandboxCgroup(key).is_frozen()


def assert_clear_error(status: int, body: str, home: Path) -> None:
    assert status == 507, body
    assert CLEAR_ERROR in json.loads(body)["message"] and str(home) in json.loads(body)["message"]


def assert_failures_logged(setup: Setup, conn: http.client.HTTPConnection, method: str, path: str,
                           body: dict[str, object] | None) -> None:
    """Failed calls, repeated, all reach server.log with their tracebacks, though it is on the full disk."""
    for _ in range(REPEATS - 1):
        status, text = setup.call(conn, method, path, body)
        assert_clear_error(status, text, setup.home)
    log = (setup.home / "server.log").read_text(errors="replace")
    assert log.count(f"{method} {path}") >= REPEATS and log.count("Traceback") >= REPEATS


def assert_usable(setup: Setup, conn: http.client.HTTPConnection) -> None:
    status, body = setup.call(conn, "GET", "/v2/sandboxes")
    assert status == 200, body


def test_kill_on_a_full_disk_destroys_the_sandbox(setup: Setup) -> None:
    sandbox = Sandbox.create(timeout=600, **setup.sdk)
    sandbox.commands.run("sleep 1000", background=True)
    key = str(record_of(setup.home, sandbox.sandbox_id)["key"])
    assert processes(key)
    conn = setup.connection()
    fill(setup.home)
    status, body = setup.call(conn, "DELETE", f"/sandboxes/{sandbox.sandbox_id}")
    assert status == 204, body  # a kill always happens
    assert_usable(setup, conn)
    assert not SandboxCgroup(key).exists() and not (setup.home / "sandboxes" / key).exists()
    assert sandbox.sandbox_id not in setup.listed()
    free(setup.home)
    setup.crash_and_restart()
    assert sandbox.sandbox_id not in setup.listed()


def test_kill_of_a_paused_sandbox_whose_record_stayed(setup: Setup) -> None:
    # What a kill leaves when even the freed space did not let it delete the record: the record of a
    # destroyed sandbox. It must not come back after a restart.
    sandbox = Sandbox.create(timeout=600, lifecycle={"on_timeout": "pause"}, **setup.sdk)
    sandbox.pause()
    with sqlite3.connect(setup.home / "registry.sqlite3") as db:
        (text,) = db.execute("SELECT record FROM sandboxes WHERE sandbox_id = ?", (sandbox.sandbox_id,)).fetchone()
    assert sandbox.kill() is True
    setup.server.process.kill()
    setup.server.process.wait(timeout=30)
    with sqlite3.connect(setup.home / "registry.sqlite3") as db:
        db.execute("INSERT INTO sandboxes (sandbox_id, record) VALUES (?, ?)", (sandbox.sandbox_id, text))
    setup.server = start_server(setup.home, setup.port, env=SERVER_ENV)
    assert sandbox.sandbox_id not in setup.listed()


def _agrees_after_a_crash(setup: Setup, sandbox: Sandbox, key: str, expected: str) -> None:
    """Once space is back and the server has crashed and restarted, the sandbox is `expected` and usable."""
    free(setup.home)
    setup.crash_and_restart()
    assert setup.listed()[sandbox.sandbox_id] == expected
    assert frozen(key) == (expected == "paused")
    again = Sandbox.connect(sandbox.sandbox_id, **setup.sdk)
    assert again.commands.run("echo alive").stdout == "alive\n"
    again.kill()


def test_pause_on_a_full_disk(setup: Setup) -> None:
    sandbox = Sandbox.create(timeout=600, **setup.sdk)
    key = str(record_of(setup.home, sandbox.sandbox_id)["key"])
    conn = setup.connection()
    fill(setup.home)
    status, body = setup.call(conn, "POST", f"/sandboxes/{sandbox.sandbox_id}/pause")
    assert_usable(setup, conn)
    if status == 204:
        assert frozen(key) and setup.listed()[sandbox.sandbox_id] == "paused"
        expected = "paused"
    else:
        assert_clear_error(status, body, setup.home)
        assert_failures_logged(setup, conn, "POST", f"/sandboxes/{sandbox.sandbox_id}/pause", None)
        # Left running, and told so.
        assert not frozen(key) and setup.listed()[sandbox.sandbox_id] == "running"
        assert sandbox.commands.run("echo alive").stdout == "alive\n"
        expected = "running"
    _agrees_after_a_crash(setup, sandbox, key, expected)


def test_resume_on_a_full_disk(setup: Setup) -> None:
    sandbox = Sandbox.create(timeout=600, **setup.sdk)
    key = str(record_of(setup.home, sandbox.sandbox_id)["key"])
    sandbox.pause()
    conn = setup.connection()
    fill(setup.home)
    status, body = setup.call(conn, "POST", f"/sandboxes/{sandbox.sandbox_id}/connect", {"timeout": 600})
    assert_usable(setup, conn)
    if status == 201:
        assert not frozen(key) and setup.listed()[sandbox.sandbox_id] == "running"
        expected = "running"
    else:
        assert_clear_error(status, body, setup.home)
        assert_failures_logged(setup, conn, "POST", f"/sandboxes/{sandbox.sandbox_id}/connect", {"timeout": 600})
        assert frozen(key) and setup.listed()[sandbox.sandbox_id] == "paused"
        expected = "paused"
    _agrees_after_a_crash(setup, sandbox, key, expected)


def _mounts_under(home: Path) -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f if line.split()[4].startswith(str(home) + "/")}


def _loops_of(home: Path) -> set[str]:
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if str(home) in line}


def test_create_on_a_full_disk_fails_cleanly(setup: Setup) -> None:
    prefix = server_prefix(setup.home)
    conn = setup.connection()
    fill(setup.home)
    before = (our_cgroups(prefix), set(os.listdir(setup.home / "sandboxes")), _mounts_under(setup.home),
              _loops_of(setup.home))
    # The first may take a pre-started sandbox (only its record is missing), the second must boot one.
    for _ in range(2):
        status, body = setup.call(conn, "POST", "/v2/sandboxes", {"templateID": "base", "timeout": 60})
        assert_clear_error(status, body, setup.home)
    assert_usable(setup, conn)
    assert setup.listed() == {}
    after = (our_cgroups(prefix), set(os.listdir(setup.home / "sandboxes")), _mounts_under(setup.home),
             _loops_of(setup.home))
    for was, now in zip(before, after, strict=True):
        assert now <= was
    free(setup.home)
    sandbox = Sandbox.create(timeout=60, **setup.sdk)
    assert sandbox.commands.run("echo alive").stdout == "alive\n"
    sandbox.kill()


def test_snapshot_and_fork_on_a_full_disk(setup: Setup) -> None:
    sandbox = Sandbox.create(timeout=600, **setup.sdk)
    key = str(record_of(setup.home, sandbox.sandbox_id)["key"])
    sandbox.files.write("/home/user/data.bin", os.urandom(1024 * 1024))
    conn = setup.connection()
    fill(setup.home)
    status, body = setup.call(conn, "POST", f"/sandboxes/{sandbox.sandbox_id}/snapshots", {})
    assert_clear_error(status, body, setup.home)
    status, body = setup.call(conn, "POST", f"/sandboxes/{sandbox.sandbox_id}/fork", {"count": 1})
    assert_clear_error(status, body, setup.home)  # the parent's files could not even be copied
    assert_usable(setup, conn)
    assert not frozen(key)
    assert [p.name for p in (setup.home / "snapshots").iterdir()] == []
    assert set(setup.listed()) == {sandbox.sandbox_id}
    free(setup.home)
    assert sandbox.commands.run("echo alive").stdout == "alive\n"
