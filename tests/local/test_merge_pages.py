"""E2B_LOCAL_MERGE_PAGES: sandboxes' identical pages are merged only when asked for.

By default no process of a sandbox has a mapping KSM may merge, so no page of one sandbox is ever
shared with another's (merged pages are a side channel between them). With the setting, the server
turns KSM on, the agents and kernels forked from the zygotes carry the mark and KSM merges their
pages across sandboxes, while what a sandbox executes itself is unmarked, and each sandbox still
sees only its own values, before and after a pause.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LocalServer, cgroup_processes, start_server, stop_server
from e2b_code_interpreter import Sandbox

from local.sandbox_helpers import registry_key

KSM_RUN = Path("/sys/kernel/mm/ksm/run")
# KSM scans at the host's rate (100 pages every 20 ms by default): two sandboxes' marked memory takes seconds.
MERGE_TIMEOUT = 180.0
# Counts the mappings of the process it runs in that KSM may merge.
OWN_MERGEABLE = ("python3 -c \"print(sum(' mg' in line for line in open('/proc/self/smaps')"
                 " if line.startswith('VmFlags')))\"")


def mergeable_mappings(pid: int) -> int:
    """How many of a host process's mappings are marked mergeable (`mg` in their VmFlags)."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:  # it has exited
        return 0
    return sum(" mg" in line for line in text.splitlines() if line.startswith("VmFlags:"))


def merged_pages(pid: int) -> int:
    """How many of a host process's pages KSM has merged with others."""
    try:
        return int(Path(f"/proc/{pid}/ksm_merging_pages").read_text())
    except OSError:
        return 0


def sandbox_processes(server: LocalServer, sandbox: Sandbox) -> set[int]:
    """Host pids of every process in the sandbox's cgroups."""
    key = registry_key(server.home, sandbox.sandbox_id)
    return cgroup_processes(rf"/e2b-local/{re.escape(key)}(/|$)")


@pytest.fixture(scope="module")
def merging_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if not KSM_RUN.exists():
        pytest.skip("this kernel has no KSM (no /sys/kernel/mm/ksm)")
    server = start_server(tmp_path_factory.mktemp("merge-home"),
                          env={"E2B_LOCAL_MERGE_PAGES": "1", "E2B_LOCAL_POOL_SIZE": "0"})
    try:
        yield server
    finally:
        stop_server(server)


def test_by_default_no_page_of_a_sandbox_is_mergeable(e2b_server: LocalServer) -> None:
    sandbox = Sandbox.create(**e2b_server.sdk)
    try:
        assert sandbox.run_code("6 * 7").text == "42"
        processes = sandbox_processes(e2b_server, sandbox)
        assert len(processes) >= 2  # the agent and the Python kernel
        assert {pid: mergeable_mappings(pid) for pid in processes} == dict.fromkeys(processes, 0)
        assert sandbox.commands.run(OWN_MERGEABLE).stdout.strip() == "0"
    finally:
        sandbox.kill()


def test_asked_for_the_agents_and_kernels_pages_merge_across_sandboxes(merging_server: LocalServer) -> None:
    assert KSM_RUN.read_text().strip() == "1"
    sandboxes = [Sandbox.create(timeout=600, **merging_server.sdk) for _ in range(2)]
    try:
        for n, sandbox in enumerate(sandboxes):
            assert sandbox.run_code(f"secret = {n}; secret").text == str(n)
        marked = {}
        for sandbox in sandboxes:
            processes = {pid: mergeable_mappings(pid) for pid in sandbox_processes(merging_server, sandbox)}
            marked[sandbox.sandbox_id] = [pid for pid, count in processes.items() if count]
            # The agent and the kernel, forks of their zygotes.
            assert len(marked[sandbox.sandbox_id]) >= 2, processes
            # What the sandbox executes starts with a memory of its own, unmarked.
            assert sandbox.commands.run(OWN_MERGEABLE).stdout.strip() == "0"

        deadline = time.monotonic() + MERGE_TIMEOUT
        while not all(merged_pages(pid) for pids in marked.values() for pid in pids):
            assert time.monotonic() < deadline, {pid: merged_pages(pid) for pids in marked.values() for pid in pids}
            time.sleep(1.0)

        # Merged pages are copied again on the first write: each sandbox keeps its own values.
        for n, sandbox in enumerate(sandboxes):
            assert sandbox.run_code("secret").text == str(n)
            assert sandbox.run_code(f"secret = {n} * 10; secret").text == str(n * 10)
        sandboxes[0].pause()
        resumed = Sandbox.connect(sandboxes[0].sandbox_id, **merging_server.sdk)
        assert resumed.run_code("secret").text == "0"
        assert sandboxes[1].run_code("secret").text == "10"
    finally:
        for sandbox in sandboxes:
            Sandbox.kill(sandbox.sandbox_id, **merging_server.sdk)
