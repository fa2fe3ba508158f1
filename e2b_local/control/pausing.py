"""Pause and resume, E2B's two modes.

- `full` (memory kept): the sandbox's cgroup is frozen. Every process stops where it stands, keeps
  its memory and uses no CPU; resuming thaws it. A frozen cgroup outlives the server, so a paused
  sandbox keeps its memory across server restarts and crashes (not across a reboot of the machine:
  then resume boots it from its files, logs so, and still answers 201).
- `filesystem`: every process is killed and the sandbox's files stay; resuming boots a fresh agent on
  them. `connect(on_resume="reboot")` does the same to a sandbox paused with its memory.

While paused, a sandbox does not expire and its `end_at` is the moment it was paused; resuming sets
a new deadline (connect's `timeout`, else 300 s; an automatic resume grants the create-time timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import httpx

from e2b_local.control.errors import ApiError

if TYPE_CHECKING:
    from e2b_local.control.sandboxes import SandboxManager

log = logging.getLogger("e2b_local")
# Connect's default new lifetime when it resumes a sandbox without a `timeout` (E2B's API default).
RESUME_TIMEOUT = 300
# How long a pause waits for the agent's health answer before calling it unresponsive.
HEALTH_TIMEOUT = 2.0
# E2B's error code for a memory image taken while the agent was not answering.
GUEST_UNRESPONSIVE = "sandbox_snapshot_guest_agent_unresponsive"


async def agent_answers(client: httpx.AsyncClient) -> bool:
    """Whether the sandbox's agent answers its health check."""
    try:
        response = await client.get("/health", timeout=HEALTH_TIMEOUT)
    except httpx.HTTPError:
        return False
    return response.status_code < 300


async def pause(manager: SandboxManager, sandbox_id: str, keep_memory: bool = True, strict: bool = False) -> None:
    """Pause a running sandbox; 409 when it is already paused.

    With `strict`, a sandbox whose agent does not answer is left running and the pause refused (503),
    rather than keeping a memory image only a reboot could resume.
    """
    async with manager.lock(sandbox_id):
        record = manager.get(sandbox_id)
        if record.state == "paused":
            raise ApiError(409, f"sandbox '{sandbox_id}' is already paused")
        live = manager.live[sandbox_id]
        if keep_memory:
            healthy = await agent_answers(live.client)
            if strict and not healthy:
                raise ApiError(503, f"sandbox '{sandbox_id}': its agent does not answer; it was not paused")
            await asyncio.to_thread(live.container.freeze)
            record.envd_unresponsive_at_pause = not healthy
        else:
            await live.aclose()
            await asyncio.to_thread(live.container.stop)
        record.state = "paused"
        record.pause_mode = "full" if keep_memory else "filesystem"
        record.end_at = time.time()
        manager.registry.put(record)


async def resume(manager: SandboxManager, sandbox_id: str, timeout: int | None, memory: bool = True,
                 automatic: bool = False) -> bool:
    """Bring a paused sandbox back (True), or extend a running one's deadline (False).

    `memory=False` (connect's `on_resume="reboot"`) boots the sandbox fresh on its files even when
    its memory was kept.
    """
    async with manager.lock(sandbox_id):
        record = manager.get(sandbox_id)
        if record.state == "running":
            if not automatic:
                manager.extend_timeout(sandbox_id, RESUME_TIMEOUT if timeout is None else timeout)
            return False
        new_timeout = RESUME_TIMEOUT if timeout is None else timeout
        if record.pause_mode == "full" and memory and record.envd_unresponsive_at_pause:
            raise ApiError(409, f"sandbox '{sandbox_id}' was paused while its agent did not answer; "
                                "resume it with on_resume='reboot'", GUEST_UNRESPONSIVE)
        live = manager.live[sandbox_id]
        if record.pause_mode == "full" and memory and await asyncio.to_thread(live.container.alive):
            await asyncio.to_thread(live.container.thaw)
        else:
            if record.pause_mode == "full" and memory:
                log.warning("sandbox %s: its paused processes are gone (was the machine restarted?); "
                            "booting it from its files, without its memory", sandbox_id)
            await manager.boot_again(record)
        record.state, record.pause_mode, record.envd_unresponsive_at_pause = "running", None, False
        record.end_at = time.time() + new_timeout
        manager.registry.put(record)
        log.info("sandbox %s resumed%s", sandbox_id, " on a request (auto-resume)" if automatic else "")
        return True
