"""Merging sandboxes' identical memory pages with the kernel's samepage merging (KSM), when asked to.

Every sandbox's agent and Python kernels are forks of the same zygotes, and the pages a fork writes
to (reference counts, caches) mostly end up byte for byte the same in every sandbox. KSM keeps one
copy of each such page: an idle code-interpreter sandbox then takes a quarter to a third of its memory.

It is off by default because merged pages are shared between sandboxes: writing to a merged page
takes measurably longer, so code in one sandbox can tell whether another holds a page it guesses
(a side channel), and a row-hammer attack on a merged page would reach the others. Only what an
agent or a kernel forked from a zygote has as it starts in its sandbox is marked mergeable (the
memory it inherited, and whatever it later stores there: a sandbox's own data may land in those
pages too). Memory mapped later, and every process a sandbox executes, are not marked, unless the
sandbox's own code asks for it.

KSM is turned on host-wide (`/sys/kernel/mm/ksm/run`) and left on: with nothing marked, its thread
sleeps. How fast it scans is the host's setting (`pages_to_scan`, `sleep_millisecs`).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("e2b_local")

KSM = Path("/sys/kernel/mm/ksm")
# /sys/kernel/mm/ksm/run: 0 stopped, 1 running, 2 stopped after unmerging everything.
RUNNING = "1"


def turn_on(ksm: Path = KSM) -> bool:
    """Start KSM if it is stopped; whether it runs (False, logged, where the kernel has none or refuses)."""
    run = ksm / "run"
    try:
        if run.read_text().strip() != RUNNING:
            run.write_text(RUNNING)
            log.info("KSM turned on (host-wide, %s) to merge sandboxes' identical pages", run)
    except OSError as exc:
        log.warning("sandboxes' pages stay unmerged: KSM cannot run here (%s)", exc)
        return False
    return True
