"""Who owns a sandbox's processes: exit statuses reach the client, the agent (pid 1) cannot be taken
down from inside, and a dead agent is noticed by the host and cleaned up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import _free_port, start_server, stop_server
from e2b import CommandExitException, NotFoundException, Sandbox, SandboxException, SandboxState
from e2b_code_interpreter import Sandbox as CodeSandbox

from e2b_local.isolation.cgroups import SandboxCgroup
from local.sandbox_helpers import registry_key


def exit_code(sandbox: Sandbox, command: str, user: str = "user") -> int:
    """The exit code `command` reports, whether zero or not."""
    try:
        return sandbox.commands.run(command, user=user, timeout=60).exit_code
    except CommandExitException as exc:
        return exc.exit_code


def ns_pid(pid: int) -> int | None:
    """The pid a host process has in its innermost pid namespace."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except OSError:
        return None
    return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def agent_pid(cgroup: SandboxCgroup) -> int:
    """The host pid of the sandbox's agent: the process of its cgroup that is pid 1 inside."""
    (pid,) = [p for p in cgroup.pids() if ns_pid(p) == 1]
    return pid


def slirp_pids(cgroup: SandboxCgroup) -> list[int]:
    return [p for p in cgroup.pids() if cmdline(p).startswith("slirp4netns") or "/slirp4netns " in cmdline(p)]


def wait_until(condition, limit: float) -> bool:
    """Poll `condition` until it holds or `limit` seconds pass; whether it held."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# -- exit statuses ---------------------------------------------------------------------------------
def test_first_commands_in_fresh_sandboxes_report_their_exit_codes(e2b_server) -> None:
    sandboxes, per_sandbox = 10, 20

    def one_sandbox(index: int) -> list[tuple[int, int]]:
        sandbox = CodeSandbox.create()
        try:
            with ThreadPoolExecutor(per_sandbox) as pool:
                codes = [(index * per_sandbox + i) % 256 for i in range(per_sandbox)]
                reported = list(pool.map(lambda n: exit_code(sandbox, f"sh -c 'exit {n}'"), codes))
            return list(zip(codes, reported, strict=True))
        finally:
            sandbox.kill()

    with ThreadPoolExecutor(sandboxes) as pool:
        results = [pair for pairs in pool.map(one_sandbox, range(sandboxes)) for pair in pairs]
    wrong = [(expected, got) for expected, got in results if expected != got]
    assert len(results) == sandboxes * per_sandbox
    assert wrong == []


# -- pid 1 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("template", ["base", "code-interpreter"])
def test_the_agent_handles_no_signal(e2b_server, template: str) -> None:
    # A handler is what would let a signal from inside reach pid 1 (the kernel drops the rest).
    factory = CodeSandbox if template == "code-interpreter" else Sandbox
    with factory.create() as sandbox:
        caught = int(sandbox.commands.run("grep SigCgt /proc/1/status", user="root").stdout.split()[1], 16)
        # Except glibc's own thread signals (32 and 33), whose handlers ignore every other sender.
        glibc_internal = (1 << 31) | (1 << 32)
        assert caught & ~glibc_internal == 0


@pytest.mark.parametrize("signal_args", ["-TERM 1", "-INT 1", "-HUP 1", "-QUIT 1", "-USR1 1", "-USR2 1",
                                         "-PIPE 1", "-ALRM 1", "-CHLD 1", "-STOP 1", "-9 1", "-9 -1"])
def test_root_inside_cannot_kill_the_agent(e2b_server, signal_args: str) -> None:
    with Sandbox.create() as sandbox:
        # The shell's own `kill` builtin, so that `kill -9 -1` (everything but pid 1 and the caller)
        # leaves the command itself alive to report.
        exit_code(sandbox, f"kill {signal_args}; sleep 0.5; echo sent", user="root")
        assert sandbox.commands.run("echo still-here").stdout == "still-here\n"
        assert sandbox.is_running()


# -- dead agents -----------------------------------------------------------------------------------
def listed(sandbox_id: str) -> bool:
    return sandbox_id in [s.sandbox_id for s in Sandbox.list().next_items()]


def test_a_killed_agent_is_noticed_and_its_sandbox_removed(e2b_server) -> None:
    sandbox = Sandbox.create()
    try:
        cgroup = SandboxCgroup(registry_key(e2b_server.home, sandbox.sandbox_id))
        helpers = slirp_pids(cgroup)
        assert helpers and listed(sandbox.sandbox_id)
        os.kill(agent_pid(cgroup), signal.SIGKILL)
        assert wait_until(lambda: not listed(sandbox.sandbox_id), 5), "still listed 5 s after its agent died"
        with pytest.raises(NotFoundException):
            Sandbox.get_info(sandbox.sandbox_id)
        with pytest.raises(SandboxException):  # the SDK's not-running error
            sandbox.commands.run("true")
        assert wait_until(lambda: not any(os.path.exists(f"/proc/{p}") and "slirp4netns" in cmdline(p)
                                          for p in helpers), 5), "slirp4netns outlived its sandbox"
        # Teardown (the disk's unmount included) finishes after the sandbox has left the list.
        directory = e2b_server.home / "sandboxes" / cgroup.key
        assert wait_until(lambda: not cgroup.exists() and not directory.exists(), 10), "left behind"
    finally:
        with contextlib.suppress(Exception):
            sandbox.kill()


def test_a_killed_agent_pauses_a_sandbox_that_asked_for_it(e2b_server) -> None:
    sandbox = Sandbox.create(lifecycle={"on_timeout": "pause"})
    try:
        sandbox.files.write("/home/user/kept.txt", "kept")
        cgroup = SandboxCgroup(registry_key(e2b_server.home, sandbox.sandbox_id))
        os.kill(agent_pid(cgroup), signal.SIGKILL)
        assert wait_until(lambda: Sandbox.get_info(sandbox.sandbox_id).state == SandboxState.PAUSED, 5)
        assert wait_until(lambda: not cgroup.exists(), 10)
        resumed = Sandbox.connect(sandbox.sandbox_id)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
    finally:
        sandbox.kill()


def occupy_pid(pid: int) -> subprocess.Popen[bytes]:
    """Start a host process in a network namespace of its own that gets exactly `pid`."""
    host_netns = os.readlink("/proc/self/ns/net")
    for _ in range(100):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(["unshare", "--net", "sleep", "300"])
        if proc.pid == pid:
            assert wait_until(lambda: os.readlink(f"/proc/{pid}/ns/net") != host_netns, 10)
            return proc
        proc.kill()
        proc.wait()
    raise AssertionError(f"could not start a process with pid {pid}")


def test_a_reused_pid_is_not_taken_for_the_sandbox_after_a_restart(tmp_path: Path) -> None:
    home, port = tmp_path / "home", _free_port()
    server = start_server(home, port)
    env = server.sdk
    sandbox = Sandbox.create(timeout=600, **env)
    impostor = None
    try:
        with sqlite3.connect(home / "registry.sqlite3") as db:
            (raw,) = db.execute("SELECT record FROM sandboxes").fetchone()
        top_pid = int(json.loads(raw)["pid"])
        cgroup = SandboxCgroup(registry_key(home, sandbox.sandbox_id))
        # The server dies, then the sandbox's agent; slirp4netns lingers in the cgroup.
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        os.kill(agent_pid(cgroup), signal.SIGKILL)
        assert wait_until(lambda: not os.path.exists(f"/proc/{top_pid}"), 30), "the top process was not reaped"
        assert slirp_pids(cgroup)
        impostor = occupy_pid(top_pid)
        impostor_netns = os.readlink(f"/proc/{top_pid}/ns/net")

        server = start_server(home, port)
        with pytest.raises(NotFoundException):
            Sandbox.get_info(sandbox.sandbox_id, **env)
        with pytest.raises(NotFoundException):
            Sandbox.update_network(sandbox.sandbox_id, {"deny_out": ["0.0.0.0/0"]}, **env)
        assert impostor.poll() is None and os.readlink(f"/proc/{top_pid}/ns/net") == impostor_netns
        tables = subprocess.run(["nsenter", f"--net=/proc/{top_pid}/ns/net", "nft", "list", "tables"],
                                capture_output=True, text=True).stdout
        assert "e2b_egress" not in tables
        assert not slirp_pids(cgroup) and not cgroup.exists()
    finally:
        if impostor is not None:
            impostor.kill()
            impostor.wait()
        with contextlib.suppress(Exception):
            Sandbox.kill(sandbox.sandbox_id, **env)
        stop_server(server)
