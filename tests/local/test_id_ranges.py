"""Each server's sandboxes map to a host id range of their own, which no host account can get."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LocalServer, start_server, stop_server
from e2b import Sandbox

from e2b_local.isolation.cgroups import SandboxCgroup
from e2b_local.isolation.owners import is_owner
from e2b_local.isolation.rootfs import ID_RANGE
from local.sandbox_helpers import registry_key

# useradd's defaults (login.defs): subordinate ranges are handed out below SUB_UID_MAX + SUB_UID_COUNT.
USERADD_SUBORDINATE_END = 600_100_000 + 65_536
USERADD_UID_MAX = 60_000


@pytest.fixture(scope="module")
def second_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = start_server(tmp_path_factory.mktemp("e2b-local-second"))
    yield server
    stop_server(server)


def _host_uids(server: LocalServer, sandbox_id: str) -> set[int]:
    uids = set()
    for pid in SandboxCgroup(registry_key(server.home, sandbox_id)).pids():
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            uids.add(int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)))
    return {uid for uid in uids if not is_owner(uid)}  # slirp4netns runs as the sandbox's owner


def _subordinate_ranges() -> list[range]:
    ranges = []
    for name in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(name).read_text().splitlines():
                parts = line.split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    ranges.append(range(int(parts[1]), int(parts[1]) + int(parts[2])))
    return ranges


def test_two_servers_never_share_host_ids(e2b_server: LocalServer, second_server: LocalServer) -> None:
    with Sandbox.create() as first, Sandbox.create(**second_server.sdk) as second:
        ranges = []
        for server, sandbox in ((e2b_server, first), (second_server, second)):
            uids = _host_uids(server, sandbox.sandbox_id)
            assert uids, "no sandbox process found"
            base = int((server.home / "id-range").read_text())
            assert all(base <= uid < base + ID_RANGE for uid in uids), (uids, base)
            assert base >= USERADD_SUBORDINATE_END and base > USERADD_UID_MAX
            for taken in _subordinate_ranges():
                assert base + ID_RANGE <= taken.start or base >= taken.stop, f"overlaps {taken}"
            ranges.append(range(base, base + ID_RANGE))
            # Inside, ownership is as E2B's: root is 0, the default user 1000 owns its home.
            out = sandbox.commands.run("id -u; stat -c %u:%g /home/user; touch /home/user/f; "
                                       "stat -c %u /home/user/f").stdout.split()
            assert out == ["1000", "1000:1000", "1000"], out
            assert sandbox.commands.run("id -u; stat -c %u /usr/bin", user="root").stdout.split() == ["0", "0"]
        assert not set(ranges[0]) & set(ranges[1])
