"""The warm pool: sandboxes pre-started per template, so that create returns at once."""

from __future__ import annotations

import asyncio
import logging

from e2b_local.control.fleet.boot import Booter
from e2b_local.control.fleet.records import Booted
from e2b_local.control.fleet.scheduling import Priority
from e2b_local.protocol import BASE_TEMPLATE, MCP_GATEWAY_TEMPLATE, TEMPLATES

log = logging.getLogger("e2b_local")


class WarmPool:
    """Up to `size` booted sandboxes per template, with internet access, refilled as they are taken."""

    def __init__(self, booter: Booter, size: int) -> None:
        self.booter = booter
        self.size = size
        self.pool: dict[str, list[Booted]] = {t: [] for t in TEMPLATES}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def refill(self, template: str) -> None:
        """Start topping up `template`'s pool in the background, unless that is under way."""
        if self.size <= 0 or (not self.booter.rootfs.is_built(template) and template != BASE_TEMPLATE):
            return
        # Gateway sandboxes are rare and start their servers after create anyway: none waits idle.
        if template == MCP_GATEWAY_TEMPLATE:
            return
        task = self._tasks.get(template)
        if task is None or task.done():
            self._tasks[template] = asyncio.create_task(self._refill_loop(template))

    def refill_all(self) -> None:
        for template in TEMPLATES:
            self.refill(template)

    async def _refill_loop(self, template: str) -> None:
        while len(self.pool[template]) < self.size:
            try:
                booted = await self.booter.boot(template, internet=True, priority=Priority.POOL)
            except Exception:
                log.exception("could not pre-start a %s sandbox", template)
                return
            self.pool[template].append(booted)

    async def take(self, template: str, internet: bool) -> Booted:
        """A booted sandbox of `template`: a pooled one when it fits and still runs, else a fresh boot."""
        if internet and self.pool[template]:
            booted = self.pool[template].pop(0)
            self.refill(template)
            if booted.container.alive():
                return booted
            await asyncio.to_thread(booted.container.destroy)
        booted = await self.booter.boot(template, internet)
        self.refill(template)
        return booted

    def cancel(self) -> None:
        """Stop refilling."""
        for task in self._tasks.values():
            task.cancel()

    async def discard(self) -> None:
        """Destroy every pooled sandbox."""
        for booted_list in self.pool.values():
            for booted in booted_list:
                await asyncio.to_thread(booted.container.destroy)
            booted_list.clear()
