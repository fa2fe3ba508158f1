"""Creating and killing many sandboxes leaves nothing behind: processes, mounts, cgroups, devices, files."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import LocalServer, cgroup_processes, our_cgroups, server_prefix, start_server, stop_server
from e2b import Sandbox

# The acceptance criterion of the project: 200 create/kill cycles.
CYCLES = 200
# Cycles in flight at once.
CONCURRENCY = 4


def our_processes(prefix: str) -> set[int]:
    """Host pids of processes in any of this server's sandbox cgroups."""
    return cgroup_processes(re.escape(f"/e2b-local/{prefix}"))


def zombies_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == pid:
                out.append(int(entry))
    return out


def snapshot(server, prefix: str) -> dict[str, object]:
    return {
        "sandbox dirs": sorted(p.name for p in (server.home / "sandboxes").iterdir()),
        "cgroups": sorted(our_cgroups(prefix)),
        "processes": len(our_processes(prefix)),
        # Mounts on the host that involve this server's files (sandbox mounts live in private namespaces),
        # each sandbox's disk by the sandbox it belongs to (the warm pool's sandboxes change).
        "host mounts": sorted(_mount_owner(server, line.split()[4]) for line in
                              Path("/proc/self/mountinfo").read_text().splitlines() if str(server.home) in line),
        "loop devices": sorted(_mount_owner(server, line.split("(", 1)[1].rstrip(")")) for line in
                               subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
                               if str(server.home) in line),
        "host network devices": sorted(os.listdir("/sys/class/net")),
        "zombies": zombies_of(server.process.pid),
    }


def _mount_owner(server, path: str) -> str:
    """`path` (a mount point or an image) by what it belongs to: a sandbox's disk counts as "disk"."""
    parts = Path(path).relative_to(server.home).parts
    return "disk" if len(parts) >= 3 and parts[0] == "sandboxes" and parts[2].startswith("disk") else path


def settled(server, prefix: str, timeout: float = 60) -> dict[str, object]:
    """A snapshot once the warm pool has stopped changing."""
    previous = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = snapshot(server, prefix)
        if current == previous:
            return current
        previous = current
        time.sleep(1.5)
    return previous


@pytest.fixture(scope="module")
def leak_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server of its own whose warm pool keeps its size (a burst would grow it for a while), so
    that what exists before the cycles and after them compares one to one."""
    server = start_server(tmp_path_factory.mktemp("leaks"), env={"E2B_LOCAL_POOL_MAX": "1"})
    try:
        yield server
    finally:
        stop_server(server)


def test_create_kill_cycles_leak_nothing(leak_server: LocalServer) -> None:
    prefix = server_prefix(leak_server.home)
    headers = {"X-API-Key": leak_server.api_key}
    before = settled(leak_server, prefix)
    def cycle(i: int) -> None:
        with httpx.Client(base_url=leak_server.url, headers=headers, timeout=120) as client:
            created = client.post("/v2/sandboxes", json={"templateID": "base", "metadata": {"cycle": str(i)}})
            assert created.status_code == 201, created.text
            sandbox_id = created.json()["sandboxID"]
            if i % 50 == 0:  # now and then, make the sandbox do some work before it goes
                sandbox = Sandbox.connect(sandbox_id, **leak_server.sdk)
                sandbox.commands.run("sleep 30 &  echo busy > /tmp/busy", user="root")
            assert client.delete(f"/sandboxes/{sandbox_id}").status_code == 204

    # Several clients at once, as a busy CI job would create them; the machine's cores bound the speed.
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        list(pool.map(cycle, range(CYCLES)))
    with httpx.Client(base_url=leak_server.url, headers=headers) as client:
        assert client.get("/v2/sandboxes", params={"metadata": "cycle=0"}).json() == []
    after = settled(leak_server, prefix)
    assert after["zombies"] == []
    # Warm-pool sandboxes are replaced along the way: compare what exists, not which one it is.
    assert after["cgroups"] == after["sandbox dirs"]
    assert after["host mounts"].count("disk") == len(after["sandbox dirs"])  # one disk per sandbox
    assert after["loop devices"].count("disk") == len(after["sandbox dirs"])
    for key in ("sandbox dirs", "cgroups"):
        assert len(after[key]) == len(before[key]), key
    for key in ("processes", "host mounts", "loop devices", "host network devices"):
        assert after[key] == before[key], key
