"""Under a burst of creates the server still answers at once: kills, reads and expiry never queue
behind boots."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import LocalServer, start_server, stop_server
from e2b import Sandbox, SandboxQuery

# The acceptance bound for a kill or a read issued while sandboxes boot: a latency guarantee, far
# above what either costs when nothing queues (milliseconds), far below a burst's duration.
ANSWER_BOUND = 1.0
# How late past its end a timed-out sandbox may still be listed.
EXPIRY_SLACK = 1.0
BURST = 20
# Sandboxes killed during the burst, one every CALL_SPACING seconds from its start.
VICTIMS = 3
CALL_SPACING = 1.0
EXPIRING = 30


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server of its own, so that the bursts here do not slow the session's server."""
    server = start_server(tmp_path_factory.mktemp("e2b-local-burst"))
    try:
        yield server
    finally:
        stop_server(server)


def connection(server: LocalServer) -> dict[str, str]:
    return {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}


def timed(call: object, *args: object, **kwargs: object) -> float:
    """How long `call(*args, **kwargs)` took, in seconds."""
    start = time.monotonic()
    call(*args, **kwargs)  # type: ignore[operator]
    return time.monotonic() - start


def test_kill_and_get_info_answer_during_a_burst_of_creates(busy_server: LocalServer) -> None:
    conn = connection(busy_server)
    victims = [Sandbox.create(timeout=120, **conn) for _ in range(VICTIMS)]
    # (get_info's time, kill's time, creates still pending after both), one per victim.
    answers: list[tuple[float, float, int]] = []
    with ThreadPoolExecutor(BURST) as pool:
        futures = [pool.submit(Sandbox.create, timeout=120, **conn) for _ in range(BURST)]
        try:
            for victim in victims:
                # Spread over the burst: its start, when every create waits, and later.
                time.sleep(CALL_SPACING)
                read = timed(Sandbox.get_info, victim.sandbox_id, **conn)
                kill = timed(Sandbox.kill, victim.sandbox_id, **conn)
                answers.append((read, kill, sum(not f.done() for f in futures)))
        finally:
            created = [f.result() for f in futures]
    for sandbox in created:
        sandbox.kill()
    during = [a for a in answers if a[2] > 0]
    # Only calls answered while the burst still booted measure anything.
    assert during, f"the burst was over before the calls were made: {answers}"
    for read, kill, pending in during:
        assert read < ANSWER_BOUND, f"get_info took {read:.2f} s with {pending} creates pending: {answers}"
        assert kill < ANSWER_BOUND, f"kill took {kill:.2f} s with {pending} creates pending: {answers}"


def test_timed_out_sandboxes_are_gone_on_time_under_load(busy_server: LocalServer) -> None:
    conn = connection(busy_server)
    label = {"expiry": "under-load"}
    # How long past its end each sandbox was still listed by a list() sent then, by id.
    late: dict[str, float] = {}
    with ThreadPoolExecutor(EXPIRING) as pool:
        futures = [pool.submit(Sandbox.create, timeout=5, metadata=label, **conn) for _ in range(EXPIRING)]
        deadline = time.monotonic() + 300
        # Poll while the burst still creates (its boots are the load) until every one is gone.
        while True:
            sent = time.time()
            listed = Sandbox.list(query=SandboxQuery(metadata=label), limit=100, **conn).next_items()
            for info in listed:
                if sent > info.end_at.timestamp() + EXPIRY_SLACK:
                    late[info.sandbox_id] = sent - info.end_at.timestamp()
            if not listed and all(f.done() for f in futures):
                break
            assert time.monotonic() < deadline, f"still listed: {[i.sandbox_id for i in listed]}"
            time.sleep(0.1)
        for f in futures:
            f.result()
    assert not late, f"listed past their end (s): {sorted(late.values(), reverse=True)}"
