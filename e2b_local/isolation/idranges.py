"""The host uid/gid range a server's sandboxes map to: its own, and no host account's.

Root in a sandbox is uid `base` on the host, the sandbox's `user` is `base + 1000`, and so on for
65536 ids. Each data directory gets a range of its own, so the sandboxes of two servers on one
machine never share host ids, and the ranges lie above anything `useradd` hands out (UID_MAX 60000;
subordinate ranges end at 600165536 by default), so no host account or subordinate id map can ever
hold them.

The built root filesystems stay owned by the storage range (HOST_ID_BASE, see rootfs.py), shared by
every server: the launcher shows them to a sandbox through idmapped mounts that shift the storage
range onto the server's. A data directory made before ranges existed keeps the storage range itself,
since files it already holds are owned by it.

A range is claimed host-wide by a file under /var/lib/e2b-local naming the data directory; a claim
whose data directory is gone (or names another range now) is stale and may be taken again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from e2b_local.isolation.claims import take
from e2b_local.isolation.rootfs import HOST_ID_BASE, ID_RANGE

RANGE_BASE = 700_000_000
SLOTS = 10_000
CLAIMS = Path("/var/lib/e2b-local/id-ranges")
RANGE_FILE = "id-range"
# A data directory holding sandboxes or snapshots from before ranges existed: their files are owned
# by the storage range.
LEGACY_MARKERS = ("registry.sqlite3",)


def server_range(home: Path, claims: Path = CLAIMS) -> int:
    """The first host id of the range of the server whose data directory is `home`."""
    recorded = home / RANGE_FILE
    try:
        base = int(recorded.read_text())
    except FileNotFoundError:
        base = HOST_ID_BASE if any((home / m).exists() for m in LEGACY_MARKERS) else _claim(home, claims)
        tmp = recorded.with_suffix(".tmp")
        tmp.write_text(str(base))
        os.replace(tmp, recorded)
        return base
    if base != HOST_ID_BASE:
        _confirm(home, claims, base)
    return base


def _slot_file(claims: Path, base: int) -> Path:
    return claims / str((base - RANGE_BASE) // ID_RANGE)


def _claim(home: Path, claims: Path) -> int:
    claims.mkdir(parents=True, exist_ok=True, mode=0o700)
    start = int.from_bytes(hashlib.sha256(str(home).encode()).digest()[:4], "big") % SLOTS
    for offset in range(SLOTS):
        base = RANGE_BASE + ((start + offset) % SLOTS) * ID_RANGE
        if take(_slot_file(claims, base), str(home), lambda path, base=base: _stale(path, base)):
            return base
    raise RuntimeError(f"no free host id range for sandboxes (every claim under {claims} is in use)")


def _confirm(home: Path, claims: Path, base: int) -> None:
    """Re-establish this directory's claim (after a reboot that lost /var/lib, say), or refuse a clash."""
    claims.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = _slot_file(claims, base)
    try:
        holder = path.read_text()
    except FileNotFoundError:
        holder = None
    if holder == str(home):
        return
    if holder is not None and not _stale(path, base):
        raise RuntimeError(f"the data directory {home} records host id range {base}, which {holder} holds; "
                           f"remove {home / RANGE_FILE} only if {home} holds no sandboxes or snapshots")
    path.write_text(str(home))


def _stale(path: Path, base: int) -> bool:
    try:
        holder = Path(path.read_text())
    except OSError:
        return False
    if not holder.is_dir():
        return True
    try:
        return int((holder / RANGE_FILE).read_text()) != base
    except FileNotFoundError:
        return False  # claimed a moment ago, its range file not written yet
    except (OSError, ValueError):
        return True
