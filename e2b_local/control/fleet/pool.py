"""The warm pool: sandboxes pre-started per template, sized by demand, so that create returns at once.

Each kind of sandbox a create can be served from has a pool of its own, keyed by what tells one
kind from another: a built-in template by its name, a custom template by its build (booted on that
build's layers with its limits). A pool holds at least its floor (E2B_LOCAL_POOL_SIZE; a custom
template's only while it is in use) and grows to the size of the last burst of creates (creates
less than BURST_GAP seconds apart) for DEMAND_WINDOW seconds after it, up to E2B_LOCAL_POOL_MAX and
only while the machine keeps a share of its memory free.
Refills run in parallel (several boots at once, at warm-pool priority, always leaving a boot slot
to the creates someone waits for); when creates stop, pools shrink back to their floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from e2b_local.control.fleet.boot import Booter
from e2b_local.control.fleet.records import Booted
from e2b_local.control.fleet.scheduling import Priority
from e2b_local.isolation.cgroups import Limits
from e2b_local.protocol import BASE_TEMPLATE, MCP_GATEWAY_TEMPLATE, TEMPLATES

log = logging.getLogger("e2b_local")

# Creates at most this far apart belong to one burst; a burst keeps the pool at its size for
# DEMAND_WINDOW seconds after its last create.
BURST_GAP = 5.0
DEMAND_WINDOW = 30.0
# A custom template counts as in use (its pool kept at the floor) this long after its last create.
CUSTOM_IDLE = 600.0
# How often pools are brought to their size when nothing else happens (shrinking, mostly).
RESIZE_TICK = 2.0
# A pool grows past its floor only while at least this share of the machine's memory is available.
MEMORY_RESERVE = 0.25
# After a refill boot failed, how long that pool waits before it tries again.
RETRY_AFTER = 10.0


def memory_available_share() -> float:
    """The share of the machine's memory available to new processes (MemAvailable / MemTotal)."""
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0])
    total = fields.get("MemTotal", 0)
    return fields.get("MemAvailable", 0) / total if total else 1.0


@dataclass(frozen=True)
class PoolSpec:
    """What a pool's sandboxes are booted with: a built-in template, or a custom template's build."""

    key: str
    template: str
    layers: tuple[Path, ...] | None = None  # None: the built-in template's current layers
    limits: Limits | None = None  # None: the server's defaults

    @property
    def builtin(self) -> bool:
        return self.layers is None

    @classmethod
    def for_template(cls, template: str) -> PoolSpec:
        return cls(template, template)


@dataclass
class _Pool:
    spec: PoolSpec
    ready: list[Booted]
    booting: set[asyncio.Task[None]]
    # Creates waiting for a boot in progress (each claims the next one that finishes).
    claims: deque[asyncio.Future[Booted]] = field(default_factory=deque)
    last_take: float = float("-inf")
    burst: int = 0  # creates in the current (or last) burst
    last_served: float = float("-inf")  # when the last create got its sandbox
    retry_at: float = 0.0


class WarmPool:
    """Booted sandboxes with internet access, per pool key, refilled as they are taken."""

    def __init__(self, booter: Booter, floor: int, ceiling: int) -> None:
        self.booter = booter
        self.floor = floor
        self.ceiling = max(ceiling, floor)
        # Pool boots at once, all pools together: one boot slot stays free for requested boots.
        self.parallel = max(1, booter.workers.boot_slots.size - 1)
        self._pools: dict[str, _Pool] = {}
        self._resizer: asyncio.Task[None] | None = None
        self._stopped = False
        for template in TEMPLATES:
            self._add(PoolSpec.for_template(template))

    def _add(self, spec: PoolSpec) -> _Pool:
        pool = self._pools.get(spec.key)
        if pool is None:
            pool = self._pools[spec.key] = _Pool(spec, [], set())
        return pool

    # -- sizes -------------------------------------------------------------------------------------
    def target(self, key: str) -> int:
        """How many ready sandboxes pool `key` should hold now."""
        pool = self._pools.get(key)
        if pool is None or self.floor == 0:  # E2B_LOCAL_POOL_SIZE=0: no pool at all
            return 0
        # From the last create served: on a loaded machine a burst's boots may outlast the window.
        idle = time.monotonic() - max(pool.last_take, pool.last_served)
        floor = self.floor if pool.spec.builtin or idle < CUSTOM_IDLE else 0
        demand = pool.burst if idle < DEMAND_WINDOW else 0
        return min(max(floor, demand), self.ceiling)

    def sizes(self) -> dict[str, tuple[int, int, int]]:
        """(ready, booting, target) of every pool, by key."""
        return {key: (len(p.ready), len(p.booting), self.target(key)) for key, p in self._pools.items()}

    def _bootable(self, spec: PoolSpec) -> bool:
        # Gateway sandboxes are rare and start their servers after create anyway: none waits idle.
        if spec.template == MCP_GATEWAY_TEMPLATE:
            return False
        return not spec.builtin or spec.template == BASE_TEMPLATE or self.booter.rootfs.is_built(spec.template)

    # -- refills -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Fill every built-in template's pool and keep pools at their size from now on."""
        self._resizer = asyncio.create_task(self._resize_loop())
        self.refill_all()

    def refill_all(self) -> None:
        for key in list(self._pools):
            self.refill(key)

    def refill(self, key: str) -> None:
        """Start as many boots as pool `key` lacks, within the pool's share of the boot slots."""
        pool = self._pools.get(key)
        if pool is None or self._stopped or time.monotonic() < pool.retry_at or not self._bootable(pool.spec):
            return
        missing = self.target(key) - len(pool.ready) - len(pool.booting)
        for _ in range(missing):
            if self._in_flight() >= self.parallel:
                return
            # Past the floor, only while memory stays free: a pool never pushes the machine to swap.
            if len(pool.ready) + len(pool.booting) >= self.floor and memory_available_share() < MEMORY_RESERVE:
                return
            task = asyncio.create_task(self._boot_one(pool))
            pool.booting.add(task)
            task.add_done_callback(pool.booting.discard)

    def _in_flight(self) -> int:
        return sum(len(p.booting) for p in self._pools.values())

    async def _boot_one(self, pool: _Pool) -> None:
        spec = pool.spec
        try:
            booted = await self.booter.boot(spec.template, internet=True, priority=Priority.POOL,
                                            layers=list(spec.layers) if spec.layers else None, limits=spec.limits)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("could not pre-start a sandbox for pool %s", spec.key)
            pool.retry_at = time.monotonic() + RETRY_AFTER
            # A create that waited for this boot boots one of its own instead.
            self._fail_claim(pool, exc)
            return
        if self._stopped or self._pools.get(spec.key) is not pool:
            # Dropped (or shutting down) while it booted.
            self._fail_claim(pool, RuntimeError("the pool was dropped"))
            await asyncio.to_thread(booted.container.destroy)
            return
        while pool.claims:
            claim = pool.claims.popleft()
            if not claim.done():
                claim.set_result(booted)
                break
        else:
            pool.ready.append(booted)
        # This boot's slot is free again: the next ones of any pool may start.
        asyncio.get_running_loop().call_soon(self.refill_all)

    @staticmethod
    def _fail_claim(pool: _Pool, exc: BaseException) -> None:
        while pool.claims:
            claim = pool.claims.popleft()
            if not claim.done():
                claim.set_exception(exc)
                return

    async def _claim(self, pool: _Pool) -> Booted | None:
        """The next of the pool's boots in progress to finish, unless each is claimed already."""
        pending = [c for c in pool.claims if not c.done()]
        if len(pending) >= len(pool.booting):
            return None
        claim: asyncio.Future[Booted] = asyncio.get_running_loop().create_future()
        pool.claims.append(claim)
        try:
            return await claim
        except asyncio.CancelledError:
            if claim.done() and not claim.cancelled() and claim.exception() is None:
                # Handed over in the same moment as cancelled: back to the pool.
                pool.ready.append(claim.result())
            raise
        except Exception:
            return None

    async def _resize_loop(self) -> None:
        while True:
            await asyncio.sleep(RESIZE_TICK)
            try:
                await self.resize()
            except Exception:
                log.exception("could not resize the warm pool")

    async def resize(self) -> None:
        """Bring every pool to its size: surplus sandboxes destroyed, missing ones started."""
        for key, pool in list(self._pools.items()):
            surplus = len(pool.ready) - self.target(key)
            # The oldest go first: they have waited longest, the newest are the last ones booted.
            for booted in [pool.ready.pop(0) for _ in range(max(surplus, 0))]:
                self.booter.workers.discard(booted.container.destroy, f"pooled sandbox {booted.container.key}")
            if not pool.spec.builtin and not pool.ready and not pool.booting and self.target(key) == 0:
                del self._pools[key]
        self.refill_all()

    # -- use ---------------------------------------------------------------------------------------
    async def take(self, spec: PoolSpec, internet: bool) -> Booted:
        """A booted sandbox of `spec`: a pooled one when it fits and still runs, else a fresh boot.

        Every take counts as demand, so the pool grows when creates come faster than it refills.
        """
        pool = self._add(spec)
        now = time.monotonic()
        pool.burst = pool.burst + 1 if now - pool.last_take <= BURST_GAP else 1
        pool.last_take = now
        try:
            return await self._serve(pool, internet)
        finally:
            pool.last_served = time.monotonic()

    async def _serve(self, pool: _Pool, internet: bool) -> Booted:
        spec = pool.spec
        while internet and pool.ready:
            booted = pool.ready.pop(0)
            self.refill(spec.key)
            if booted.container.alive():
                return booted
            self.booter.workers.discard(booted.container.destroy, f"pooled sandbox {booted.container.key}")
        # A pool boot under way started before this create: it finishes sooner than a boot started now.
        claimed = await self._claim(pool) if internet else None
        if claimed is not None:
            self.refill(spec.key)
            if claimed.container.alive():
                return claimed
            self.booter.workers.discard(claimed.container.destroy, f"pooled sandbox {claimed.container.key}")
        booted = await self.booter.boot(spec.template, internet, layers=list(spec.layers) if spec.layers else None,
                                        limits=spec.limits)
        self.refill(spec.key)
        return booted

    async def drop(self, keys: set[str]) -> None:
        """Forget the pools of `keys` and destroy their sandboxes, boots in progress included.

        Returns once none of them runs: call it before deleting the layers they were booted on.
        """
        pools = [self._pools.pop(key) for key in keys if key in self._pools]
        for pool in pools:
            if pool.booting:
                await asyncio.gather(*pool.booting, return_exceptions=True)
            for booted in pool.ready:
                await asyncio.to_thread(booted.container.destroy)
            pool.ready.clear()

    def cancel(self) -> None:
        """Stop refilling and resizing."""
        self._stopped = True
        if self._resizer is not None:
            self._resizer.cancel()
        for pool in self._pools.values():
            for task in pool.booting:
                task.cancel()

    async def discard(self) -> None:
        """Destroy every pooled sandbox."""
        for pool in self._pools.values():
            for booted in pool.ready:
                await asyncio.to_thread(booted.container.destroy)
            pool.ready.clear()


def build_key(build_id: str) -> str:
    """The pool key of a custom template's build."""
    return "build:" + build_id
