"""The CLI knows its server: it binds before recording itself, and every failure to start says why."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import ROOTFS_CACHE, LocalServer, _free_port


def cli(home: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None,
        user: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `e2b-local ARGS` for data directory `home` (as `user` through setpriv, when given)."""
    full = {**os.environ, "E2B_LOCAL_HOME": str(home), "E2B_LOCAL_ROOTFS": ROOTFS_CACHE, **(env or {})}
    full.pop("E2B_LOCAL_PORT", None)
    if port:
        full["E2B_LOCAL_PORT"] = str(port)
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run([*prefix, sys.executable, "-m", "e2b_local", *args], capture_output=True, text=True,
                          env=full, timeout=900)


def _wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.05)


def test_health_says_who_answers(e2b_server: LocalServer) -> None:
    health = httpx.get(e2b_server.url + "/health").json()
    assert health["status"] == "ok"
    assert health["pid"] == e2b_server.process.pid
    assert health["home"] == str(e2b_server.home.resolve())
    assert health["templates"] == ["base", "code-interpreter-v1", "mcp-gateway"]
    assert health["version"] == cli(e2b_server.home, "--version").stdout.split()[-1]
    assert health["uptime"] > 0


def test_start_on_a_port_of_another_data_directory_names_it(e2b_server: LocalServer, tmp_path: Path) -> None:
    port = int(e2b_server.url.rsplit(":", 1)[1])
    started = cli(tmp_path / "other", "start", port=port)
    assert started.returncode == 1
    assert started.stderr.strip().splitlines()[-1] == (
        f"e2b-local: error: e2b-local failed to start: port {port} is in use by pid {e2b_server.process.pid} "
        f"(another e2b-local, data directory {e2b_server.home.resolve()})")
    assert cli(tmp_path / "other", "status").returncode == 3  # it did not record itself


def test_start_on_a_port_held_by_another_program_names_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = cli(tmp_path / "home", "start", port=port)
    assert started.returncode == 1
    assert f"port {port} is in use by pid {os.getpid()} (" in started.stderr
    assert "Traceback" not in started.stderr


def test_one_server_per_data_directory(tmp_path: Path) -> None:
    home, port, other_port = tmp_path / "home", _free_port(), _free_port()
    assert cli(home, "start", port=port).returncode == 0
    try:
        pid = json.loads(cli(home, "status").stdout)["pid"]
        # Another port for the same data directory: refused, not silently ignored.
        moved = cli(home, "start", "--port", str(other_port))
        assert moved.returncode == 1
        assert f"already running for {home.resolve()} at http://127.0.0.1:{port} (pid {pid})" in moved.stderr
        # A second server for the same data directory refuses, and the first keeps its records.
        second = cli(home, "serve", "--port", str(other_port))
        assert second.returncode == 1
        assert second.stderr.strip() == (f"e2b-local: error: e2b-local is already running for data directory "
                                         f"{home.resolve()} (pid {pid}, port {port}); stop it first: e2b-local stop")
        status = json.loads(cli(home, "status").stdout)
        assert (status["running"], status["pid"], status["port"]) == (True, pid, port)
        assert status["version"] and status["templates"] == ["base", "code-interpreter-v1", "mcp-gateway"]
    finally:
        assert cli(home, "stop").returncode == 0
    assert cli(home, "status").returncode == 3


def test_a_dead_server_is_not_reported_and_start_replaces_it(tmp_path: Path) -> None:
    home, port = tmp_path / "home", _free_port()
    assert cli(home, "start", port=port).returncode == 0
    pid = json.loads(cli(home, "status").stdout)["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    assert cli(home, "status").returncode == 3
    assert cli(home, "stop").returncode == 3
    try:
        restarted = cli(home, "start", port=port)
        assert restarted.returncode == 0, restarted.stderr
        assert json.loads(cli(home, "status").stdout)["pid"] != pid
    finally:
        cli(home, "stop")


def test_port_values_are_checked(tmp_path: Path) -> None:
    for bad in ("0", "65536", "abc"):
        result = cli(tmp_path / "home", "start", "--port", bad)
        assert result.returncode == 2
        assert "Invalid value for '--port'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "home").exists()


def test_without_root_one_line_and_no_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tmp_path.chmod(0o755)
    for verb in ("start", "serve", "build"):
        result = cli(home, verb, user="65534", env={"HOME": str(tmp_path)})
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == (f"e2b-local: error: e2b-local {verb} needs root "
                                         "(cgroups, mounts, user namespaces): run it with sudo")


def test_build_with_a_warm_cache_says_so_and_prunes_stale_builds(tmp_path: Path) -> None:
    from e2b_local.isolation.rootfs import RootfsStore

    shared = RootfsStore(Path(ROOTFS_CACHE))
    cache = tmp_path / "rootfs"
    cache.mkdir()
    # The current builds, borrowed from the shared cache (links, which prune never follows).
    for built in (shared.base_path(), shared.code_interpreter_path()):
        (cache / built.name).symlink_to(built)
    for stale in ("base-000000000000", "code-interpreter-v1-000000000000", ".build-base-x"):
        (cache / stale / "etc").mkdir(parents=True)
    result = cli(tmp_path / "home", "build", env={"E2B_LOCAL_ROOTFS": str(cache)})
    assert result.returncode == 0
    assert "root filesystems are built (warm cache)" in result.stderr
    assert (cache / "base-000000000000").exists()
    pruned = cli(tmp_path / "home", "build", "--prune", env={"E2B_LOCAL_ROOTFS": str(cache)})
    assert pruned.returncode == 0, pruned.stderr
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".lock")) == sorted(
        [shared.base_path().name, shared.code_interpreter_path().name])
    assert pruned.stderr.count("pruned ") == 3
    assert shared.base_path().is_dir() and shared.code_interpreter_path().is_dir()
