"""The fork server that launches sandboxes, and its zygotes: every launch goes through it, neither holds
anything of a sandbox, sandboxes are none of their children, and a fork server or a zygote that dies
is replaced at the next launch."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable
from pathlib import Path

from conftest import cgroup_processes
from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeSandbox

from local.persistence_helpers import wait_for
from local.sandbox_helpers import registry_key

FORK_SERVER_MODULE = b"e2b_local.isolation.forkserver"
ZYGOTE_MODULE = b"'e2b_local.zygote'"
KERNEL_ZYGOTE_MODULE = b"'e2b_local.zygote.kernels'"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _running(parent: int, module: bytes) -> list[int]:
    """The children of `parent` that run `module` (and have not exited)."""
    found = []
    for pid in _children(parent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if module in cmdline and state not in ("Z", "X"):
            found.append(pid)
    return found


def _fork_servers(server_pid: int) -> list[int]:
    """The server's children that run the fork server."""
    return _running(server_pid, FORK_SERVER_MODULE)


def _descriptors(pid: int) -> list[str]:
    """What the descriptors of `pid` beyond its standard streams refer to."""
    return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd") if int(fd) > 2]


def _ppid(pid: int) -> int | None:
    """The parent of `pid`; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def _kill_the_one(find: Callable[[], list[int]], what: str) -> int:
    """Kill the one process `find` lists and wait until it is gone; its pid."""
    (pid,) = find()
    os.kill(pid, 9)
    wait_for(lambda: pid not in find(), f"the killed {what} to be gone")
    return pid


def _assert_replaced(find: Callable[[], list[int]], killed: int) -> None:
    """`find` lists one process again, and not the killed one."""
    replaced = find()
    assert len(replaced) == 1 and replaced[0] != killed, replaced


def test_launches_go_through_one_fork_server_that_holds_nothing_of_a_sandbox(e2b_server) -> None:
    server_pid = e2b_server.process.pid
    first = Sandbox.create()
    second = Sandbox.create()
    try:
        servers = _fork_servers(server_pid)
        assert len(servers) == 1, servers
        fork_server = servers[0]
        # Its forks exit once they have answered, and are collected: no zombie, no child left but the
        # zygote that both sandboxes' agents were forked from, and the one of the code interpreter's
        # kernels (its pool sandbox has one).
        zygotes = _running(fork_server, ZYGOTE_MODULE)
        kernel_zygotes = _running(fork_server, KERNEL_ZYGOTE_MODULE)
        assert len(zygotes) == 1 and len(kernel_zygotes) == 1, (zygotes, kernel_zygotes)
        # Its descriptors beyond the server's standard streams: its request socket, and each zygote's
        # socket and pidfd; none of a sandbox's. The agent zygote's: its request socket alone. The kernel
        # zygote's: its request socket and its signals' wake-up pipe, and for each code-interpreter
        # sandbox its channel, namespaces, seccomp filter and cgroups (what a kernel of that sandbox
        # joins), nothing else. Neither zygote keeps a child. All read at one moment between launches:
        # the warm pool refills meanwhile, and a launch holds its forks and descriptors until it is done.
        expected = ["anon_inode"] * 2 + ["socket"] * 3
        allowed = (r"anon_inode:\[eventpoll\]|pipe:\[\d+\]|socket:\[\d+\]|(user|mnt|net|ipc|uts|pid):\[\d+\]"
                   r"|.*/seccomp\.bpf|/sys/fs/cgroup/.*/e2b-local/[^/]+(/work)?/cgroup\.procs")
        seen: dict[str, list] = {}

        def read() -> dict[str, list]:
            return {"children": sorted(_children(fork_server)), "descriptors": _descriptors(fork_server),
                    "zygote": _descriptors(zygotes[0]), "kernel zygote": _descriptors(kernel_zygotes[0]),
                    "zygotes' children": _children(zygotes[0]) + _children(kernel_zygotes[0])}

        def between_launches() -> bool:
            try:
                seen.update(read())
            except FileNotFoundError:  # a descriptor closed while it was read: a launch was under way
                return False
            return (seen["children"] == sorted(zygotes + kernel_zygotes)
                    and sorted(target.split(":")[0] for target in seen["descriptors"]) == expected
                    and [target.split(":")[0] for target in seen["zygote"]] == ["socket"]
                    and all(re.fullmatch(allowed, target) for target in seen["kernel zygote"])
                    and not seen["zygotes' children"])

        with contextlib.suppress(AssertionError):
            wait_for(between_launches, "the fork server and its zygotes to be between launches", limit=30)
        assert seen["children"] == sorted(zygotes + kernel_zygotes), seen
        assert sorted(target.split(":")[0] for target in seen["descriptors"]) == expected, seen
        assert [target.split(":")[0] for target in seen["zygote"]] == ["socket"], seen
        for target in seen["kernel zygote"]:
            assert re.fullmatch(allowed, target), target
        assert not seen["zygotes' children"], seen
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
        fork_servers = functools.partial(_fork_servers, server_pid)
        fork_server = _kill_the_one(fork_servers, "fork server")
        assert before.commands.run("echo still here").stdout == "still here\n"
        # Without internet access, so that the create launches a sandbox now instead of taking the pooled one.
        after = Sandbox.create(allow_internet_access=False)
        try:
            assert after.commands.run("echo launched").stdout == "launched\n"
            _assert_replaced(fork_servers, fork_server)
        finally:
            after.kill()
    finally:
        before.kill()


def test_a_zygote_that_died_is_replaced_and_its_sandboxes_live_on(e2b_server) -> None:
    server_pid = e2b_server.process.pid
    before = Sandbox.create(allow_internet_access=False)
    try:
        (fork_server,) = _fork_servers(server_pid)
        zygotes = functools.partial(_running, fork_server, ZYGOTE_MODULE)
        zygote = _kill_the_one(zygotes, "zygote")
        assert before.commands.run("echo still here").stdout == "still here\n"
        after = Sandbox.create(allow_internet_access=False)
        try:
            assert after.commands.run("echo forked").stdout == "forked\n"
            _assert_replaced(zygotes, zygote)
        finally:
            after.kill()
    finally:
        before.kill()


def test_a_kernel_zygote_that_died_is_replaced_and_kernels_still_start(e2b_server) -> None:
    server_pid = e2b_server.process.pid
    before = CodeSandbox.create(allow_internet_access=False)
    try:
        (fork_server,) = _fork_servers(server_pid)
        zygotes = functools.partial(_running, fork_server, KERNEL_ZYGOTE_MODULE)
        zygote = _kill_the_one(zygotes, "kernel zygote")
        # The sandbox it served starts its kernels afresh now.
        context = before.create_code_context()
        assert before.run_code("6 * 7", context=context).text == "42"
        after = CodeSandbox.create(allow_internet_access=False)
        try:
            assert after.run_code("6 * 7").text == "42"
            _assert_replaced(zygotes, zygote)
        finally:
            after.kill()
    finally:
        before.kill()
