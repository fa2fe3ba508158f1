"""An idle sandbox's agent stays asleep, and what it answers through the host carries the host's headers once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from e2b_code_interpreter import Sandbox as CodeSandbox

from e2b_local.isolation.cgroups import SandboxCgroup
from e2b_local.protocol import ENVD_PORT
from local.sandbox_helpers import registry_key
from local.test_process_ownership import agent_pid

# The idle agent's wakeups counted over this long. uvicorn's own loop would wake it ten times a
# second: 55 were counted here.
IDLE_SECONDS = 5.0
# A wakeup a second for each of its two servers (10 are counted), and a margin for asyncio's odd timer.
MOST_WAKEUPS = 3 * IDLE_SECONDS


def _wakeups(pid: int) -> int:
    """The voluntary context switches of every thread of `pid` so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def test_an_idle_agent_wakes_about_once_a_second(e2b_server) -> None:
    sandbox = CodeSandbox.create()
    try:
        assert sandbox.run_code("1 + 1").text == "2"
        pid = agent_pid(SandboxCgroup(registry_key(e2b_server.home, sandbox.sandbox_id)))
        before = _wakeups(pid)
        time.sleep(IDLE_SECONDS)
        woken = _wakeups(pid) - before
        assert woken <= MOST_WAKEUPS, f"the idle agent woke {woken} times in {IDLE_SECONDS} s"
        assert sandbox.run_code("2 + 2").text == "4"  # and it still answers
    finally:
        sandbox.kill()


def test_an_answer_relayed_from_the_agent_has_one_date_and_one_server_header(e2b_server, sandbox) -> None:
    answer = httpx.get(f"{e2b_server.url}/health", headers={
        "E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT),
        "X-Access-Token": sandbox._envd_access_token or ""}, timeout=30)
    assert answer.status_code == 204
    names = [name for name, _ in answer.headers.raw]
    assert names.count(b"date") == 1, answer.headers.raw
    assert names.count(b"server") == 1, answer.headers.raw
