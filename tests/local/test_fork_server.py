"""The fork server that launches sandboxes: every launch goes through it, it holds nothing of a sandbox,
its sandboxes are none of its children, and a fork server that dies is replaced at the next launch."""

from __future__ import annotations

import os
import re
from pathlib import Path

from conftest import cgroup_processes
from e2b import Sandbox

from local.persistence_helpers import wait_for
from local.sandbox_helpers import registry_key

FORK_SERVER_MODULE = b"e2b_local.isolation.forkserver"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _fork_servers(server_pid: int) -> list[int]:
    """The server's children that run the fork server (and have not exited)."""
    found = []
    for pid in _children(server_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if FORK_SERVER_MODULE in cmdline and state not in ("Z", "X"):
            found.append(pid)
    return found


def _ppid(pid: int) -> int | None:
    """The parent of `pid`; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_launches_go_through_one_fork_server_that_holds_nothing_of_a_sandbox(e2b_server) -> None:
    server_pid = e2b_server.process.pid
    first = Sandbox.create()
    second = Sandbox.create()
    try:
        servers = _fork_servers(server_pid)
        assert len(servers) == 1, servers
        fork_server = servers[0]
        # Its forks exit once they have answered, and are collected: no zombie, no child left.
        wait_for(lambda: not _children(fork_server), "the fork server's forks to be reaped")
        # Its descriptors: the server's standard streams and its request socket, none of a sandbox's.
        fds = {int(fd): os.readlink(f"/proc/{fork_server}/fd/{fd}") for fd in os.listdir(f"/proc/{fork_server}/fd")}
        beyond_stdio = [target for fd, target in fds.items() if fd > 2]
        assert len(beyond_stdio) == 1 and beyond_stdio[0].startswith("socket:"), fds
        # The sandboxes' processes were handed to the server (a subreaper), not kept by the fork server:
        # in each sandbox's cgroup, every process whose parent is outside it is a child of the server.
        for sandbox in (first, second):
            key = registry_key(e2b_server.home, sandbox.sandbox_id)
            processes = cgroup_processes(rf"/e2b-local/{re.escape(key)}(/|$)")
            assert processes, key
            parents = {_ppid(pid) for pid in processes} - processes - {None}
            assert parents == {server_pid}, (key, parents)
    finally:
        first.kill()
        second.kill()


def test_a_fork_server_that_died_is_replaced_and_its_sandboxes_live_on(e2b_server) -> None:
    server_pid = e2b_server.process.pid
    before = Sandbox.create()
    try:
        (fork_server,) = _fork_servers(server_pid)
        os.kill(fork_server, 9)
        wait_for(lambda: fork_server not in _fork_servers(server_pid), "the killed fork server to be gone")
        assert before.commands.run("echo still here").stdout == "still here\n"
        # Without internet access, so that the create launches a sandbox now instead of taking the pooled one.
        after = Sandbox.create(allow_internet_access=False)
        try:
            assert after.commands.run("echo launched").stdout == "launched\n"
            replaced = _fork_servers(server_pid)
            assert len(replaced) == 1 and replaced[0] != fork_server, replaced
        finally:
            after.kill()
    finally:
        before.kill()
