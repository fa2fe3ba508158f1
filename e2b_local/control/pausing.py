"""Pause and resume, E2B's two modes.

- `full` (memory kept): the sandbox's cgroup is frozen. Every process stops where it stands, keeps
  its memory and uses no CPU; resuming thaws it. A frozen cgroup outlives the server, so a paused
  sandbox keeps its memory across server restarts and crashes (not across a reboot of the machine:
  then resume boots it from its files, logs so, and still answers 201).
- `filesystem`: every process is killed and the sandbox's files stay; resuming boots a fresh agent on
  them. `connect(on_resume="reboot")` does the same to a sandbox paused with its memory.

While paused, a sandbox does not expire and its `end_at` is the moment it was paused; resuming sets
a new deadline (connect's `timeout`, else 300 s; an automatic resume grants the create-time timeout).

Each step is recorded before it is taken, and undone when it cannot be completed, so that a failure
(a full disk, say) leaves the sandbox as it was and a crash leaves a record the next start can act
on: it freezes a sandbox recorded as paused and thaws one recorded as running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from typing import TYPE_CHECKING

import httpx

from e2b_local.control.errors import ApiError

if TYPE_CHECKING:
    from e2b_local.control.registry import SandboxRecord
    from e2b_local.control.sandboxes import SandboxManager

# What a failed write to the registry raises.
STORAGE_ERRORS = (sqlite3.Error, OSError)

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
        healthy = True
        if keep_memory:
            healthy = await agent_answers(live.client)
            if strict and not healthy:
                raise ApiError(503, f"sandbox '{sandbox_id}': its agent does not answer; it was not paused")
        before = dataclasses.replace(record)
        manager.commit(record, state="paused", pause_mode="full" if keep_memory else "filesystem",
                       end_at=time.time(), envd_unresponsive_at_pause=not healthy)
        try:
            if keep_memory:
                await asyncio.to_thread(live.container.freeze)
            else:
                await manager.stop_booted(live)
        except BaseException:
            if keep_memory:
                await asyncio.to_thread(live.container.thaw)
                _restore(manager, record, before)
            raise  # a sandbox that was stopped stays recorded as paused: its processes are gone


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
        running = {"state": "running", "pause_mode": None, "envd_unresponsive_at_pause": False}
        if record.pause_mode == "full" and memory and await asyncio.to_thread(live.container.alive):
            before = dataclasses.replace(record)
            manager.commit(record, **running, end_at=time.time() + new_timeout)
            try:
                await asyncio.to_thread(live.container.thaw)
            except BaseException:
                await asyncio.to_thread(live.container.freeze)
                _restore(manager, record, before)
                raise
        else:
            if record.pause_mode == "full" and memory:
                log.warning("sandbox %s: its paused processes are gone (was the machine restarted?); "
                            "booting it from its files, without its memory", sandbox_id)
            if record.pause_mode != "filesystem":
                # Booting ends whatever memory was kept: recorded first, so no failure can claim it is still there.
                manager.commit(record, pause_mode="filesystem", envd_unresponsive_at_pause=False)
            booted = await manager.boot_again(record)
            try:
                manager.commit(record, **running, **booted, end_at=time.time() + new_timeout)
            except BaseException:
                await manager.stop_booted(live)  # back to what the record says: paused, on its files
                raise
        log.info("sandbox %s resumed%s", sandbox_id, " on a request (auto-resume)" if automatic else "")
        return True


def _restore(manager: SandboxManager, record: SandboxRecord, before: SandboxRecord) -> None:
    """Put a record back as it was before a step that could not be completed."""
    changed = {f.name: getattr(before, f.name) for f in dataclasses.fields(before)}
    try:
        manager.commit(record, **changed)
    except STORAGE_ERRORS:
        # The next start reads the stored record and brings the sandbox's processes in line with it.
        log.exception("sandbox %s: could not record its state again", record.sandbox_id)
        for name, value in changed.items():
            setattr(record, name, value)
