"""Reaping: the agent is pid 1 of its sandbox, so orphaned processes become its children.

asyncio waits for the processes the agent starts itself; everything else that exits (daemons,
double-forked jobs) would stay a zombie, so a periodic sweep collects those.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Collection

# How often orphaned zombies are collected.
SWEEP_SECONDS = 1.0


def _zombie_children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and fields[1] == me:
            found.append(int(entry))
    return found


def reap_orphans(own: Collection[int]) -> None:
    """Collect exited children that the agent did not start itself (those in `own` are awaited elsewhere)."""
    for pid in _zombie_children():
        if pid not in own:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


async def reap_forever(own: Callable[[], Collection[int]]) -> None:
    """Sweep for orphaned zombies until cancelled; `own()` names the children awaited elsewhere."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        reap_orphans(own())
