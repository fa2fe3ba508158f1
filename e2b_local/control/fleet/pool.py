"""The warm pool: sandboxes pre-started so that create returns at once.

Built-in templates keep `size` each, and more while creates come in bursts: a template's pool holds
as many as were created from it within the last `DEMAND_WINDOW` seconds, up to `max_size` and to what
a share of the machine's available memory holds, so that a burst like the last one (a test suite, an
agent fanning out) finds its sandboxes booted. Once creates stop, the sandboxes beyond `size` go
(`_trim`), so that an idle server holds no more than its base pool.

Custom templates keep one each, for the few created from most recently (a bounded set, least recently
used out first), keyed by everything their boot depends on: their layers and their CPU and memory
limits. A custom template's sandbox goes when the template is rebuilt or deleted (see `forget` and
`drop`), or when others push it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from e2b_local.control.fleet.boot import Booter
from e2b_local.control.fleet.records import Booted
from e2b_local.control.fleet.scheduling import Priority
from e2b_local.isolation.cgroups import Limits
from e2b_local.protocol import BASE_TEMPLATE, MCP_GATEWAY_TEMPLATE, TEMPLATES

log = logging.getLogger("e2b_local")

# How far back creates count towards a pool's size, and how often a pool grown past its size is
# checked for sandboxes that recent creates no longer call for.
DEMAND_WINDOW = 30.0
TRIM_INTERVAL = 5.0
# A pool grows by at most what this share of the machine's available memory holds, counting this
# much per sandbox (an idle code-interpreter sandbox uses about 70 MiB).
MEMORY_SHARE = 0.25
SANDBOX_MEMORY = 128 << 20


def memory_available() -> int:
    """The machine's available memory in bytes (MemAvailable), 0 when it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass(frozen=True)
class PoolSpec:
    """What a custom template's sandbox boots on; `owner` is the template (its id) it belongs to."""

    owner: str
    base_template: str
    layers: tuple[Path, ...]
    limits: Limits | None


@dataclass
class _Slot:
    """A custom template's pre-started sandbox (when ready) and the boot that refills it."""

    spec: PoolSpec
    ready: list[Booted] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    closed: bool = False


class WarmPool:
    """Booted sandboxes with internet access, refilled as they are taken.

    `size` per built-in template (0: no pool at all), up to `max_size` while creates come in bursts;
    one for each of the `templates` custom templates created from most recently (0: none for custom
    templates).
    """

    def __init__(self, booter: Booter, size: int, templates: int = 0, max_size: int = 0) -> None:
        self.booter = booter
        self.size = size
        self.max_size = max(size, max_size)
        # When each recent create from a built-in template asked the pool (oldest first).
        self._demand: dict[str, deque[float]] = {t: deque() for t in TEMPLATES}
        self._trimmer: asyncio.Task[None] | None = None
        self.pool: dict[str, list[Booted]] = {t: [] for t in TEMPLATES}
        # Boots under way for each template's pool.
        self._booting: dict[str, set[asyncio.Task[None]]] = {t: set() for t in TEMPLATES}
        # Pool boots at once, over all templates: half the boot slots, so that creates never wait for
        # a slot behind a drained pool's refills.
        self.parallel = max(1, booter.workers.boot_slots.size // 2)
        self.templates = templates if size > 0 else 0
        # Least recently created from first.
        self.slots: OrderedDict[PoolSpec, _Slot] = OrderedDict()
        self._disposals: set[asyncio.Task[None]] = set()

    # -- built-in templates ------------------------------------------------------------------------
    def target(self, template: str) -> int:
        """How many sandboxes of `template` the pool keeps now: `size`, more after a burst of creates."""
        if self.size <= 0:
            return 0
        demand = self._demand[template]
        horizon = time.monotonic() - DEMAND_WINDOW
        while demand and demand[0] < horizon:
            demand.popleft()
        wanted = min(self.max_size, max(self.size, len(demand)))
        if wanted > self.size:
            room = int(memory_available() * MEMORY_SHARE) // SANDBOX_MEMORY
            wanted = min(wanted, self.size + room)
        return wanted

    def refill(self, template: str) -> None:
        """Start topping up `template`'s pool in the background: one boot for each sandbox missing
        (and not booting already), as many at once as `parallel` allows."""
        if self.size <= 0 or (not self.booter.rootfs.is_built(template) and template != BASE_TEMPLATE):
            return
        # Gateway sandboxes are rare and start their servers after create anyway: none waits idle.
        if template == MCP_GATEWAY_TEMPLATE:
            return
        booting = self._booting[template]
        missing = self.target(template) - len(self.pool[template]) - len(booting)
        under_way = sum(len(tasks) for tasks in self._booting.values())
        for _ in range(min(missing, self.parallel - under_way)):
            booting.add(asyncio.create_task(self._boot_one(template)))

    def refill_all(self) -> None:
        for template in TEMPLATES:
            self.refill(template)

    async def _boot_one(self, template: str) -> None:
        try:
            booted = await self.booter.boot(template, internet=True, priority=Priority.POOL)
        except Exception:
            log.exception("could not pre-start a %s sandbox", template)
            booted = None
        finally:
            self._booting[template].discard(asyncio.current_task())  # type: ignore[arg-type]
        if booted is not None:
            self.pool[template].append(booted)
        # The boots `parallel` held back; after a failure, not this template's (its next create tries
        # again), so that a template that cannot boot is not retried in a loop.
        for other in TEMPLATES:
            if booted is not None or other != template:
                self.refill(other)

    async def take(self, template: str, internet: bool) -> Booted:
        """A booted sandbox of `template`: a pooled one when it fits and still runs, else a fresh boot."""
        self._demand[template].append(time.monotonic())
        if 0 < self.size < self.max_size and self._trimmer is None:
            self._trimmer = asyncio.create_task(self._trim())
        if internet and self.pool[template]:
            booted = self.pool[template].pop(0)
            self.refill(template)
            if booted.container.alive():
                return booted
            await asyncio.to_thread(booted.container.destroy)
        booted = await self.booter.boot(template, internet)
        self.refill(template)
        return booted

    async def _trim(self) -> None:
        """While some pool may hold more than `size`: destroy what recent creates no longer call for."""
        try:
            while True:
                await asyncio.sleep(TRIM_INTERVAL)
                for template in TEMPLATES:
                    pool = self.pool[template]
                    surplus = max(len(pool) - self.target(template), 0)
                    # The longest-waiting go first, on the teardown threads.
                    doomed, pool[:] = pool[:surplus], pool[surplus:]
                    for booted in doomed:
                        self.booter.workers.discard(booted.container.destroy, f"pooled sandbox {booted.container.key}")
                if not any(self._demand.values()) and all(len(p) <= self.size for p in self.pool.values()):
                    return
        finally:
            self._trimmer = None

    # -- custom templates --------------------------------------------------------------------------
    async def take_custom(self, spec: PoolSpec) -> Booted:
        """A booted sandbox with internet access on `spec`: the pooled one when it is there, else a fresh boot.

        Either way, the template's slot is refilled in the background (it becomes the most recent).
        """
        if self.templates <= 0:
            return await self._boot(spec, Priority.REQUESTED)
        slot = self.slots.get(spec)
        if slot is None:
            slot = self.slots[spec] = _Slot(spec)
            while len(self.slots) > self.templates:
                self._close(self.slots.popitem(last=False)[1])
        self.slots.move_to_end(spec)
        if not slot.ready and slot.task is not None and not slot.task.done():
            # Its refill is under way and nearer its end than a boot begun now.
            with contextlib.suppress(Exception):
                await asyncio.shield(slot.task)
        booted = None
        # A closed slot's sandbox is being discarded (the template was rebuilt or deleted meanwhile).
        if slot.ready and not slot.closed:
            booted = slot.ready.pop()
            if not booted.container.alive():
                await asyncio.to_thread(booted.container.destroy)
                booted = None
        if booted is None:
            booted = await self._boot(spec, Priority.REQUESTED)
        if not slot.closed and (slot.task is None or slot.task.done()):
            slot.task = asyncio.create_task(self._fill(slot))
        return booted

    async def _boot(self, spec: PoolSpec, priority: Priority) -> Booted:
        return await self.booter.boot(spec.base_template, internet=True, layers=list(spec.layers),
                                      priority=priority, limits=spec.limits)

    async def _fill(self, slot: _Slot) -> None:
        if slot.ready:
            return
        try:
            booted = await self._boot(slot.spec, Priority.POOL)
        except Exception:
            log.exception("could not pre-start a sandbox of template %s", slot.spec.owner)
            return
        if slot.closed:
            # Rebuilt, deleted or pushed out while it booted.
            await asyncio.to_thread(booted.container.destroy)
            return
        slot.ready.append(booted)

    def forget(self, owner: str) -> None:
        """Discard template `owner`'s pre-started sandboxes (in the background): it was rebuilt."""
        for spec in [s for s in self.slots if s.owner == owner]:
            self._close(self.slots.pop(spec))

    async def drop(self, owner: str) -> None:
        """Discard template `owner`'s pre-started sandboxes, and wait until they are gone (with any
        boot of one under way): it is being deleted, and its layers go next."""
        disposals = [self._close(self.slots.pop(spec)) for spec in [s for s in self.slots if s.owner == owner]]
        if disposals:
            await asyncio.gather(*disposals, return_exceptions=True)

    def _close(self, slot: _Slot) -> asyncio.Task[None]:
        slot.closed = True
        task = asyncio.create_task(self._dispose(slot))
        self._disposals.add(task)
        task.add_done_callback(self._disposals.discard)
        return task

    async def _dispose(self, slot: _Slot) -> None:
        ready, slot.ready = slot.ready, []
        for booted in ready:
            await asyncio.to_thread(booted.container.destroy)
        if slot.task is not None and not slot.task.done():
            # A boot under way destroys what it started once it sees the slot closed.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await slot.task

    # -- shutdown ----------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop refilling (sandboxes still booting are the booter's to discard on shutdown)."""
        if self._trimmer is not None:
            self._trimmer.cancel()
        for booting in self._booting.values():
            for task in list(booting):
                task.cancel()
        for slot in self.slots.values():
            slot.closed = True
            if slot.task is not None:
                slot.task.cancel()

    async def discard(self) -> None:
        """Destroy every pooled sandbox."""
        for booted_list in self.pool.values():
            for booted in booted_list:
                await asyncio.to_thread(booted.container.destroy)
            booted_list.clear()
        while self.slots:
            self._close(self.slots.popitem(last=False)[1])
        if self._disposals:
            await asyncio.gather(*list(self._disposals), return_exceptions=True)
