"""Where the server's blocking work runs, so that no kind of work queues behind another.

A boot (a disk, namespaces, an agent's Python start) costs most of a core for a while: a few run at
a time, in threads of their own, and a sandbox someone asked for boots before one for the warm pool.
Teardown (kills, expiry) and monitoring (metrics samples, liveness checks) have their own threads, so
a kill or a reading never waits for a boot. Other blocking work uses the event loop's default executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from enum import IntEnum
from typing import TypeVar

log = logging.getLogger("e2b_local")
T = TypeVar("T")

# A teardown mostly waits on the kernel (killing processes, unmounting): many can overlap.
TEARDOWN_WORKERS = 8
# Samples and liveness checks read a few cgroup files each.
MONITOR_WORKERS = 2


class Priority(IntEnum):
    """Which waiting boot goes first: lower first."""

    REQUESTED = 0  # a client is waiting for it (create, resume, fork)
    POOL = 1  # a warm-pool refill


class BootSlots:
    """A counting semaphore whose waiters are served by priority, then in order of arrival."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def hold(self, priority: Priority) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block, waiting for one first if all are taken."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (int(priority), next(self._order), waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                # Granted a slot in the same moment as cancelled: hand it on.
                if waiter.done() and not waiter.cancelled():
                    self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():  # a waiter cancelled meanwhile is skipped
                waiter.set_result(None)
                return
        self._free += 1


class Workers:
    """The thread pools of one server, by kind of work."""

    def __init__(self, boot_concurrency: int) -> None:
        # Boots at once (a setting): a boot spends about half its time waiting (mounts, the launcher's
        # handshake), so three per core keep the cores busy without every boot finishing late, together.
        self.boot_slots = BootSlots(boot_concurrency)
        self.boots = ThreadPoolExecutor(boot_concurrency, thread_name_prefix="e2b-boot")
        self.teardown = ThreadPoolExecutor(TEARDOWN_WORKERS, thread_name_prefix="e2b-teardown")
        self.monitor = ThreadPoolExecutor(MONITOR_WORKERS, thread_name_prefix="e2b-monitor")

    async def run(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(*args)` in one of `executor`'s threads."""
        return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args))

    def discard(self, fn: Callable[[], None], what: str) -> None:
        """Start `fn` in a teardown thread without waiting for it (it logs its own failure)."""

        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("could not clean up %s", what)

        self.teardown.submit(run)

    def shutdown(self) -> None:
        """Stop taking work; threads still running finish on their own."""
        for executor in (self.boots, self.teardown, self.monitor):
            executor.shutdown(wait=False)
