"""Under a burst of creates the server still answers at once: kills, reads and expiry never queue
behind boots; and a client that kept its connections across a restart of the server carries on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOTFS_CACHE, LocalServer, _free_port, start_server, stop_server
from e2b import Sandbox, SandboxQuery

# Sandboxes booted at once by the burst's server (E2B_LOCAL_BOOT_CONCURRENCY below): a call that
# queued behind the burst's boots would return only once every create queued before it had started,
# that is with at most this many still pending.
BOOT_SLOTS = 2
# Long enough that calls land while creates still wait, however fast a boot is (one takes well under
# 0.1 s of its slot with a forked agent).
BURST = 40
# Sandboxes killed during the burst, one every CALL_SPACING seconds from its start.
VICTIMS = 3
CALL_SPACING = 0.3
EXPIRING = 30


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server of its own, so that the bursts here do not slow the session's server."""
    home = tmp_path_factory.mktemp("e2b-local-burst")
    server = start_server(home, env={"E2B_LOCAL_BOOT_CONCURRENCY": str(BOOT_SLOTS)})
    try:
        yield server
    finally:
        stop_server(server)


def test_kill_and_get_info_answer_during_a_burst_of_creates(busy_server: LocalServer) -> None:
    conn = busy_server.sdk
    victims = [Sandbox.create(timeout=120, **conn) for _ in range(VICTIMS)]
    # (creates pending before get_info, creates pending after kill), one per victim.
    answers: list[tuple[int, int]] = []
    with ThreadPoolExecutor(BURST) as pool:
        futures = [pool.submit(Sandbox.create, timeout=120, **conn) for _ in range(BURST)]

        def pending() -> int:
            return sum(not f.done() for f in futures)

        try:
            for victim in victims:
                # Spread over the burst: its start, when every create waits, and later.
                time.sleep(CALL_SPACING)
                before = pending()
                info = Sandbox.get_info(victim.sandbox_id, **conn)
                assert info.sandbox_id == victim.sandbox_id
                assert Sandbox.kill(victim.sandbox_id, **conn)
                answers.append((before, pending()))
        finally:
            created = [f.result() for f in futures]
    for sandbox in created:
        sandbox.kill()
    # Only calls made while more creates waited than boot at once can tell queueing from not.
    telling = [a for a in answers if a[0] > 2 * BOOT_SLOTS]
    assert telling, f"the burst was over before the calls were made: {answers}"
    for _, after in telling:
        assert after > BOOT_SLOTS, f"get_info and kill waited for the creates queued before them: {answers}"
    assert all(s.sandbox_id not in {v.sandbox_id for v in victims} for s in Sandbox.list(**conn).next_items())


def test_timed_out_sandboxes_are_gone_on_time_under_load(busy_server: LocalServer) -> None:
    conn = busy_server.sdk
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
                # The server received the list after `sent`, so a sandbox it listed had not reached its end
                # (which the API writes in whole milliseconds, rounded down).
                if sent > info.end_at.timestamp() + 0.001:
                    late[info.sandbox_id] = sent - info.end_at.timestamp()
            if not listed and all(f.done() for f in futures):
                break
            assert time.monotonic() < deadline, f"still listed: {[i.sandbox_id for i in listed]}"
            time.sleep(0.1)
        for f in futures:
            f.result()
    assert not late, f"listed past their end (s): {sorted(late.values(), reverse=True)}"


def cli(home: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "E2B_LOCAL_HOME": str(home), "E2B_LOCAL_ROOTFS": ROOTFS_CACHE,
           "E2B_LOCAL_PORT": str(port)}
    return subprocess.run([sys.executable, "-m", "e2b_local", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def test_calls_right_after_a_restart_succeed(tmp_path: Path) -> None:
    home, port = tmp_path / "home", _free_port()
    assert cli(home, port, "start").returncode == 0
    try:
        conn = {"api_key": (home / "api-key").read_text().strip(), "api_url": f"http://127.0.0.1:{port}",
                "sandbox_url": f"http://127.0.0.1:{port}"}
        sandbox = Sandbox.create(timeout=600, **conn)
        for restart in range(3):
            # Calls of every kind, so that the client holds kept-alive connections to the old server.
            sandbox.files.write("/home/user/round", str(restart))
            assert sandbox.commands.run("cat /home/user/round").stdout == str(restart)
            assert sandbox.get_info().sandbox_id == sandbox.sandbox_id
            stopped = cli(home, port, "stop")
            assert stopped.returncode == 0, stopped.stderr
            started = cli(home, port, "start")
            assert started.returncode == 0, started.stderr
            # At once, on the same client: each kind of call must go through.
            assert sandbox.get_info().sandbox_id == sandbox.sandbox_id
            assert sandbox.sandbox_id in {s.sandbox_id for s in Sandbox.list(**conn).next_items()}
            assert sandbox.commands.run("echo after").stdout == "after\n"
            assert sandbox.files.read("/home/user/round") == str(restart)
        sandbox.kill()
    finally:
        cli(home, port, "stop")

