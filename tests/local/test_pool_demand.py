"""The warm pool follows demand: a burst of creates grows a template's pool for the next burst (up to
E2B_LOCAL_POOL_MAX), and once creates stop, it shrinks back to E2B_LOCAL_POOL_SIZE, leaving nothing behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import LocalServer, our_cgroups, server_prefix, start_server, stop_server
from e2b import Sandbox

from e2b_local.control.fleet.pool import DEMAND_WINDOW, TRIM_INTERVAL
from e2b_local.protocol import AGENT_SOCKET_NAME
from local.persistence_helpers import wait_for
from local.sandbox_helpers import registered_keys, registry_key

BURST = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = start_server(tmp_path_factory.mktemp("pool-demand"),
                          env={"E2B_LOCAL_POOL_SIZE": "1", "E2B_LOCAL_POOL_MAX": str(BURST)})
    try:
        yield server
    finally:
        stop_server(server)


def pooled_base(home: Path) -> set[str]:
    """Keys of the pre-started base sandboxes whose agent answers (directories nobody has created)."""
    registered = registered_keys(home)
    found = set()
    for directory in (home / "sandboxes").iterdir():
        if directory.name in registered:
            continue
        try:
            if len(json.loads((directory / "launch.json").read_text())["lowers"]) != 1:
                continue  # a code-interpreter sandbox: two layers
        except (OSError, ValueError, KeyError):
            continue
        transport = httpx.HTTPTransport(uds=str(directory / AGENT_SOCKET_NAME))
        try:
            with httpx.Client(transport=transport, base_url="http://sandbox", timeout=2) as client:
                if client.get("/health").status_code < 300:
                    found.add(directory.name)
        except httpx.HTTPError:
            continue
    return found


def test_a_burst_grows_the_pool_for_the_next_one_and_it_shrinks_back(server: LocalServer) -> None:
    home = server.home
    wait_for(lambda: len(pooled_base(home)) == 1, "the base pool to fill", 120)
    first = [Sandbox.create("base", **server.sdk) for _ in range(BURST)]
    for sandbox in first:
        sandbox.kill()
    # Well within the demand window: the pool keeps as many as the burst asked for.
    wait_for(lambda: len(pooled_base(home)) >= BURST, "the pool to grow to the burst", DEMAND_WINDOW - 5)
    ready = pooled_base(home)
    assert len(ready) == BURST  # never past E2B_LOCAL_POOL_MAX
    with ThreadPoolExecutor(BURST) as pool:
        second = list(pool.map(lambda _: Sandbox.create("base", **server.sdk), range(BURST)))
    try:
        assert {registry_key(home, s.sandbox_id) for s in second} <= ready  # each got a pre-started sandbox
        assert all(s.commands.run("echo ok").stdout == "ok\n" for s in second)
    finally:
        for sandbox in second:
            sandbox.kill()
    # Once creates stop, back to E2B_LOCAL_POOL_SIZE; the sandboxes it let go leave nothing behind.
    wait_for(lambda: len(pooled_base(home)) == 1, "the pool to shrink back",
             DEMAND_WINDOW + 6 * TRIM_INTERVAL + 60)
    wait_for(lambda: our_cgroups(server_prefix(home)) == {d.name for d in (home / "sandboxes").iterdir()},
             "the cgroups of the discarded pool sandboxes to go", 30)
    assert len(list((home / "sandboxes").iterdir())) == 2  # the base pool's one and the code interpreter's
