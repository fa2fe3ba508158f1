"""What code inside a sandbox, even as root, must not be able to do to the host or to other sandboxes."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox


def run_root(sandbox: Sandbox, command: str, timeout: float = 60) -> tuple[int, str]:
    """Run a command as root inside the sandbox; (exit code, stdout + stderr)."""
    try:
        result = sandbox.commands.run(command, user="root", timeout=timeout)
        return result.exit_code, result.stdout + result.stderr
    except CommandExitException as exc:
        return exc.exit_code, exc.stdout + exc.stderr


@pytest.fixture(scope="module")
def sbx(e2b_server) -> Sandbox:
    sandbox = Sandbox.create()
    yield sandbox
    sandbox.kill()


def test_host_file_is_unreadable(sbx: Sandbox, tmp_path: Path) -> None:
    secret = f"host-secret-{uuid.uuid4()}"
    for path in (Path("/tmp") / f"e2b-isolation-{uuid.uuid4().hex}", tmp_path / "secret.txt"):
        path.write_text(secret)
        try:
            _, out = run_root(sbx, f"cat {path}; cat /proc/1/root{path}; grep -r {secret} /tmp /root /home "
                                      "/proc/1/root/tmp 2>/dev/null; echo done")
            assert secret not in out
            assert "done" in out.splitlines()
        finally:
            path.unlink()


def test_host_root_filesystem_is_not_the_sandbox_root(sbx: Sandbox) -> None:
    host_marker = Path("/etc") / f"e2b-isolation-{uuid.uuid4().hex}"
    host_marker.write_text("host")
    try:
        _, out = run_root(sbx, f"test -e {host_marker} && echo visible || echo absent")
        assert out.strip() == "absent"
    finally:
        host_marker.unlink()
    # Writing as root inside the sandbox changes only the sandbox's own files.
    run_root(sbx, "echo changed > /etc/motd; touch /usr/bin/sandbox-only")
    assert not Path("/usr/bin/sandbox-only").exists()


def test_host_processes_are_invisible_and_unkillable(sbx: Sandbox) -> None:
    marker = f"e2b-isolation-{uuid.uuid4().hex}"
    host = subprocess.Popen(["bash", "-c", f"exec -a {marker} sleep 300"])
    try:
        _, out = run_root(sbx, "ps -eo pid,args")
        assert marker not in out
        pids_inside = [line.split()[0] for line in out.splitlines()[1:]]
        assert len(pids_inside) < 20  # only the sandbox's own few processes
        _, out = run_root(sbx, f"kill -9 {host.pid}; echo rc=$?")
        time.sleep(0.2)
        assert host.poll() is None, "a host process was killed from inside the sandbox"
        _, out = run_root(sbx, "kill -9 -1; echo survived")  # every process it can see, as root
        time.sleep(0.2)
        assert host.poll() is None
    finally:
        host.kill()
        host.wait()


def test_host_loopback_is_unreachable(e2b_server, sbx: Sandbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    accepted: list[object] = []
    listener.settimeout(0.2)

    def accept() -> None:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                accepted.append(listener.accept())
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        api_port = e2b_server.url.rsplit(":", 1)[1]
        for target in (f"127.0.0.1:{port}", f"10.0.2.2:{port}", f"127.0.0.1:{api_port}", f"10.0.2.2:{api_port}"):
            _, out = run_root(sbx, f"curl -sS -m 3 http://{target}/health; echo rc=$?")
            assert "rc=0" not in out, f"{target} was reachable from the sandbox: {out}"
    finally:
        thread.join()
        listener.close()
    assert accepted == []


def test_no_internet_gives_loopback_only(e2b_server) -> None:
    with Sandbox.create(allow_internet_access=False) as sandbox:
        _, out = run_root(sandbox, "ls /sys/class/net 2>/dev/null || ip -br link")
        assert "tap0" not in out
        _, out = run_root(sandbox, "curl -sS -m 5 https://pypi.org/simple/ -o /dev/null; echo rc=$?")
        assert "rc=0" not in out
        # The sandbox's own loopback works (polled: the server's start-up time depends on the load).
        _, out = run_root(sandbox, "python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 & "
                                   "for i in $(seq 300); do code=$(curl -s -o /dev/null -w '%{http_code}' "
                                   "http://127.0.0.1:8000/) && break; sleep 0.1; done; echo $code")
        assert out.strip() == "200"


def test_dangerous_syscalls_are_denied(sbx: Sandbox) -> None:
    checks = {
        "unshare -U true": "new namespaces",
        "unshare -m true": "new namespaces",
        "mount -t tmpfs none /mnt": "mounts",
        "umount /proc": "unmounts",
        "dmesg": "the host kernel log",
        "python3 -c 'import ctypes; l=ctypes.CDLL(None); raise SystemExit(l.syscall(321,0,0,0) == -1 and 7 or 0)'":
            "bpf",
    }
    for command, what in checks.items():
        code, out = run_root(sbx, command)
        assert code != 0, f"{what} should be denied, but `{command}` succeeded: {out}"


AGENT_CODE_CHECK = """
import importlib.util, pathlib, sys
root = pathlib.Path("/.e2b/agent/e2b_local")
sources = sorted(root.rglob("*.py"))
print(len(sources))
print(sorted(p.name for p in root.iterdir()))
print([str(p) for p in sources if not pathlib.Path(importlib.util.cache_from_source(str(p))).is_file()])
"""


def test_agent_code_is_the_sandbox_side_only_compiled_and_read_only(sbx: Sandbox) -> None:
    # The sandbox's python3 is the base layer's, which the agent runs with: its bytecode is what boots use.
    code, out = run_root(sbx, f"python3 -c '{AGENT_CODE_CHECK}'")
    assert code == 0, out
    count, top, uncompiled = out.splitlines()
    assert int(count) > 20
    for host_side in ("control", "isolation", "commands", "cli.py", "settings.py"):
        assert f"'{host_side}'" not in top
    assert "'agent'" in top and "'interpreter'" in top
    assert uncompiled == "[]"
    code, out = run_root(sbx, "touch /.e2b/agent/e2b_local/agent/app.py /.e2b/agent/e2b_local/new.py")
    assert code != 0 and "Read-only file system" in out


def test_sandboxes_cannot_see_each_other(e2b_server, sbx: Sandbox) -> None:
    with Sandbox.create() as other:
        other.commands.run("echo other-secret > /tmp/other-file")
        handle = other.commands.run("exec -a other-sandbox-process sleep 60", background=True)
        _, out = run_root(sbx, "cat /tmp/other-file; ps -eo args")
        assert "other-secret" not in out
        assert "other-sandbox-process" not in out
        handle.kill()


def test_agent_survives_what_root_does_to_the_root_filesystem(e2b_server) -> None:
    with Sandbox.create() as sandbox:
        run_root(sandbox, "rm -rf /usr/lib/python3* /usr/local/lib/python3* /usr/bin/python3*; echo gone")
        assert sandbox.commands.run("echo still-here").stdout == "still-here\n"
        assert sandbox.commands.run("ls /usr/bin/python3 2>&1 || true").stdout.count("No such file") == 1


def test_fork_bomb_stays_inside(e2b_server) -> None:
    bomb = Sandbox.create()
    bystander = Sandbox.create()
    try:
        bomb.commands.run("bash -c ':(){ :|:& };:' >/dev/null 2>&1", user="root", background=True)
        time.sleep(3)
        assert bystander.commands.run("echo alive").stdout == "alive\n"
        assert subprocess.run(["true"]).returncode == 0
        host_pids = len(os.listdir("/proc"))
        assert host_pids < 4096
    finally:
        assert bomb.kill() is True
        bystander.kill()


def test_memory_bomb_stays_inside(e2b_server) -> None:
    bomb = Sandbox.create()
    bystander = Sandbox.create()
    try:
        hog = "python3 -c 'b = []\nwhile True: b.append(bytearray(64 * 1024 * 1024))'"
        with pytest.raises(CommandExitException) as info:
            bomb.commands.run(hog, user="root", timeout=60)
        assert info.value.exit_code != 0  # killed by the sandbox's own memory limit
        assert bomb.commands.run("echo survived").stdout == "survived\n"
        assert bystander.commands.run("echo alive").stdout == "alive\n"
    finally:
        bomb.kill()
        bystander.kill()
