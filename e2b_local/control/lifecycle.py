"""A sandbox's life after create: pause and resume (E2B's two modes), timeouts, expiry, auto-resume.

- `full` (memory kept): the sandbox's cgroup is frozen. Every process stops where it stands, keeps
  its memory and uses no CPU; resuming thaws it. A frozen cgroup outlives the server, so a paused
  sandbox keeps its memory across server restarts and crashes (not across a reboot of the machine:
  then resume boots it from its files, logs so, and still answers 201).
- `filesystem`: every process is killed and the sandbox's files stay; resuming boots a fresh agent on
  them. `connect(on_resume="reboot")` does the same to a sandbox paused with its memory.

While paused, a sandbox does not expire and its `end_at` is the moment it was paused; resuming sets
a new deadline (connect's `timeout`, else 300 s; an automatic resume grants the create-time timeout).
When a running sandbox's time is up it is killed, or paused if its lifecycle says so.

Each step is recorded before it is taken, and undone when it cannot be completed, so that a failure
(a full disk, say) leaves the sandbox as it was and a crash leaves a record the next start can act
on: it freezes a sandbox recorded as paused and thaws one recorded as running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

import httpx

from e2b_local.control.errors import ApiError
from e2b_local.control.fleet.sandboxes import STORAGE_ERRORS, Fleet, check_timeout
from e2b_local.control.fleet.upstream import AgentUpstream
from e2b_local.control.registry import PauseMode, SandboxRecord, SandboxState
from e2b_local.control.services import events
from e2b_local.control.services.events import rfc3339

log = logging.getLogger("e2b_local")
# Connect's default new lifetime when it resumes a sandbox without a `timeout` (E2B's API default).
RESUME_TIMEOUT = 300
# How long a pause waits for the agent's health answer before calling it unresponsive.
HEALTH_TIMEOUT = 2.0
# E2B's error code for a memory image taken while the agent was not answering.
GUEST_UNRESPONSIVE = "sandbox_snapshot_guest_agent_unresponsive"
# How often expiry is checked.
TIMEOUT_TICK = 0.25


async def agent_answers(client: httpx.AsyncClient) -> bool:
    """Whether the sandbox's agent answers its health check."""
    try:
        response = await client.get("/health", timeout=HEALTH_TIMEOUT)
    except httpx.HTTPError:
        return False
    return response.status_code < 300


class SandboxLifecycle:
    """Pauses, resumes and times out the fleet's sandboxes."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._tasks: list[asyncio.Task[None]] = []
        # Sandboxes whose timeout is being acted on, so that the next tick does not act again.
        self._expiring: set[str] = set()

    def start(self) -> None:
        """Start acting on timeouts."""
        self._tasks.append(asyncio.create_task(self._expire_loop()))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    # -- pause and resume ----------------------------------------------------------------------------
    async def pause(self, sandbox_id: str, keep_memory: bool = True, strict: bool = False) -> None:
        """Pause a running sandbox; 409 when it is already paused.

        With `strict`, a sandbox whose agent does not answer is left running and the pause refused (503),
        rather than keeping a memory image only a reboot could resume.
        """
        fleet = self.fleet
        async with fleet.lock(sandbox_id):
            record = fleet.get(sandbox_id)
            if record.paused:
                raise ApiError(409, f"sandbox '{sandbox_id}' is already paused")
            live = fleet.live[sandbox_id]
            healthy = True
            if keep_memory:
                healthy = await agent_answers(live.client)
                if strict and not healthy:
                    raise ApiError(503, f"sandbox '{sandbox_id}': its agent does not answer; it was not paused")
            if healthy:
                # Read while the agent can still answer: frozen or stopped, it cannot.
                await fleet.logs.collect(sandbox_id, live.client)
            before = dataclasses.replace(record)
            fleet.commit(record, state=SandboxState.PAUSED,
                         pause_mode=PauseMode.FULL if keep_memory else PauseMode.FILESYSTEM,
                         end_at=time.time(), envd_unresponsive_at_pause=not healthy)
            try:
                if keep_memory:
                    await asyncio.to_thread(live.container.freeze)
                else:
                    await fleet.stop_booted(live)
            except BaseException:
                if keep_memory:
                    await asyncio.to_thread(live.container.thaw)
                    self._restore(record, before)
                else:
                    fleet.events.emit(events.PAUSED, record)
                raise  # a sandbox that was stopped stays recorded as paused: its processes are gone
            fleet.events.emit(events.PAUSED, record)
        log.info("sandbox %s paused (%s)", sandbox_id, "memory kept" if keep_memory else "files only")

    async def resume(self, sandbox_id: str, timeout: int | None, memory: bool = True,
                     automatic: bool = False) -> bool:
        """Bring a paused sandbox back (True), or extend a running one's deadline (False).

        `memory=False` (connect's `on_resume="reboot"`) boots the sandbox fresh on its files even when
        its memory was kept.
        """
        fleet = self.fleet
        async with fleet.lock(sandbox_id):
            record = fleet.get(sandbox_id)
            if record.running:
                if not automatic:
                    self.extend_timeout(sandbox_id, RESUME_TIMEOUT if timeout is None else timeout)
                return False
            new_timeout = RESUME_TIMEOUT if timeout is None else timeout
            kept_memory = record.pause_mode is PauseMode.FULL
            if kept_memory and memory and record.envd_unresponsive_at_pause:
                raise ApiError(409, f"sandbox '{sandbox_id}' was paused while its agent did not answer; "
                                    "resume it with on_resume='reboot'", GUEST_UNRESPONSIVE)
            live = fleet.live[sandbox_id]
            running = {"state": SandboxState.RUNNING, "pause_mode": None, "envd_unresponsive_at_pause": False}
            if kept_memory and memory and await asyncio.to_thread(live.container.alive):
                before = dataclasses.replace(record)
                fleet.commit(record, **running, end_at=time.time() + new_timeout)
                try:
                    await asyncio.to_thread(live.container.thaw)
                except BaseException:
                    await asyncio.to_thread(live.container.freeze)
                    self._restore(record, before)
                    raise
            else:
                if kept_memory and memory:
                    log.warning("sandbox %s: its paused processes are gone (was the machine restarted?); "
                                "booting it from its files, without its memory", sandbox_id)
                if record.pause_mode is not PauseMode.FILESYSTEM:
                    # Booting ends whatever memory was kept: recorded first, so no failure can claim it is still there.
                    fleet.commit(record, pause_mode=PauseMode.FILESYSTEM, envd_unresponsive_at_pause=False)
                booted = await fleet.boot_again(record)
                try:
                    fleet.commit(record, **running, **booted, end_at=time.time() + new_timeout)
                except BaseException:
                    await fleet.stop_booted(live)  # back to what the record says: paused, on its files
                    raise
            log.info("sandbox %s resumed%s", sandbox_id, " on a request (auto-resume)" if automatic else "")
            fleet.events.emit(events.RESUMED, record, {"auto_resume": True} if automatic else None)
            return True

    def _restore(self, record: SandboxRecord, before: SandboxRecord) -> None:
        """Put a record back as it was before a step that could not be completed."""
        changed = {f.name: getattr(before, f.name) for f in dataclasses.fields(before)}
        try:
            self.fleet.commit(record, **changed)
        except STORAGE_ERRORS:
            # The next start reads the stored record and brings the sandbox's processes in line with it.
            log.exception("sandbox %s: could not record its state again", record.sandbox_id)
            for name, value in changed.items():
                setattr(record, name, value)

    async def upstream_for_request(self, sandbox_id: str) -> AgentUpstream | None:
        """The agent connections of a running sandbox, or None when it is not running.

        A paused sandbox whose lifecycle has auto-resume is resumed first, as E2B does on traffic.
        """
        fleet = self.fleet
        record = fleet.records.get(sandbox_id)
        if record is not None and record.paused and record.lifecycle is not None and record.lifecycle.auto_resume:
            try:
                await self.resume(sandbox_id, timeout=record.timeout, automatic=True)
            except Exception as exc:
                log.exception("sandbox %s: automatic resume failed", sandbox_id)
                fleet.logs.add(sandbox_id, "error", "Automatic resume failed", error=exc)
                return None
        live = fleet.live.get(sandbox_id)
        if record is None or live is None or not record.running:
            return None
        return live.upstream

    # -- timeouts ------------------------------------------------------------------------------------
    def set_timeout(self, sandbox_id: str, timeout: int) -> None:
        """Reset the sandbox's deadline to now + `timeout`.

        A paused sandbox has no deadline: there it becomes the lifetime an automatic resume grants.
        """
        record = self.fleet.get(sandbox_id)
        check_timeout(timeout)
        if record.paused:
            self.fleet.commit(record, timeout=timeout)
        else:
            self.fleet.commit(record, end_at=time.time() + timeout)
            self.fleet.events.emit(events.UPDATED, record, {"set_timeout": rfc3339(record.end_at)})

    def extend_timeout(self, sandbox_id: str, timeout: int) -> None:
        """Connect's rule: a running sandbox's end time only moves later."""
        record = self.fleet.get(sandbox_id)
        check_timeout(timeout)
        if record.running:
            end_at = max(record.end_at, time.time() + timeout)
            if end_at != record.end_at:
                self.fleet.commit(record, end_at=end_at)
                self.fleet.events.emit(events.UPDATED, record, {"set_timeout": rfc3339(end_at)})

    async def _expire_loop(self) -> None:
        # Each timeout is acted on in a task of its own: a slow kill or pause delays no other.
        while True:
            await asyncio.sleep(TIMEOUT_TICK)
            now = time.time()
            for record in list(self.fleet.records.values()):
                if record.running and record.end_at <= now and record.sandbox_id not in self._expiring:
                    self._expiring.add(record.sandbox_id)
                    task = asyncio.create_task(self._expire(record))
                    self._tasks.append(task)
                    task.add_done_callback(self._tasks.remove)
            self.fleet.reap()

    async def _expire(self, record: SandboxRecord) -> None:
        try:
            with contextlib.suppress(ApiError):
                await self.on_timeout(record)
        except Exception:
            log.exception("sandbox %s: acting on its timeout failed", record.sandbox_id)
        finally:
            self._expiring.discard(record.sandbox_id)

    async def on_timeout(self, record: SandboxRecord) -> None:
        """What happens when a sandbox's time is up: killed (E2B's default), or paused if its lifecycle says so."""
        self.fleet.logs.add(record.sandbox_id, "info", "Sandbox timed out",
                            action="pause" if record.pauses_on_loss else "kill")
        if record.pauses_on_loss:
            log.info("sandbox %s timed out; pausing it", record.sandbox_id)
            await self.pause(record.sandbox_id, keep_memory=record.auto_pause_memory)
            return
        log.info("sandbox %s timed out", record.sandbox_id)
        await self.fleet.kill(record.sandbox_id)
