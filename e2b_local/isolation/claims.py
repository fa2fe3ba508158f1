"""Host-wide claims on numbered resources (owner uids, id ranges): one file each, created exclusively.

A claim is a file named after what it reserves, holding who holds it. Several e2b-local servers on
one machine may claim at the same moment; O_EXCL decides. A claim whose holder is gone is stale and
may be taken over.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def take(path: Path, holder: str, stale: Callable[[Path], bool],
         on_stale: Callable[[], None] | None = None) -> bool:
    """Claim `path` for `holder`; True when it is now ours, False when someone live holds it.

    A stale claim (`stale(path)` says so) is removed first, after `on_stale` has cleaned up whatever its
    holder left under it.
    """
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if not stale(path):
                return False
            if on_stale is not None:
                on_stale()
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(holder)
        return True
    return False  # another claimer took it over between the removal and our attempt
