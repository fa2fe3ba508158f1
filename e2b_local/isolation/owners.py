"""Host uids that own sandboxes: one per running sandbox, unique on this host, no account's.

Each sandbox's user namespace is created with such a uid as its owner, and its slirp4netns runs as
that uid. Two things follow. The kernel charges per-user counters (inotify instances and watches,
user namespaces, ...) of everything inside the sandbox to its owner, so one sandbox exhausting them
touches neither the host's root nor another sandbox. And every connection a sandbox makes to the
outside is a socket of its owner uid on the host, which the host's firewall matches (firewall.py).

The range lies above anything `useradd` hands out (UID_MAX 60000; subordinate ranges end at
600100000 by default), so no host account or subordinate id map can ever hold one. Allocation is
host-wide, so that several e2b-local servers on one machine never share an owner: a claim is a file
created exclusively under /run, naming the sandbox directory that holds it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from pathlib import Path

from e2b_local.isolation import claims

OWNER_BASE = 1_500_000_000
OWNER_COUNT = 1 << 24
CLAIMS = Path("/run/e2b-local/owners")
# Attempts at a random free uid before giving up (the range is far larger than any fleet).
ATTEMPTS = 64


def is_owner(uid: int) -> bool:
    """Whether `uid` lies in the range sandbox owners are drawn from."""
    return OWNER_BASE <= uid < OWNER_BASE + OWNER_COUNT


def claim(holder: Path, on_stale: Callable[[int], None]) -> int:
    """Reserve a free owner uid for the sandbox whose directory is `holder`.

    A claim left behind by a sandbox that is gone is taken back on the way; `on_stale` is called with
    its uid first, so that whatever else that sandbox left under it (firewall rules) goes too.
    """
    CLAIMS.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _ in range(ATTEMPTS):
        uid = OWNER_BASE + secrets.randbelow(OWNER_COUNT)
        if claims.take(CLAIMS / str(uid), str(holder), _stale, on_stale=lambda uid=uid: on_stale(uid)):
            return uid
    raise RuntimeError("no free sandbox owner uid")


def release(uid: int, holder: Path) -> None:
    """Give back `uid`, if `holder` still holds it."""
    path = CLAIMS / str(uid)
    with contextlib.suppress(OSError):
        if path.read_text() == str(holder):
            path.unlink()


def _stale(path: Path) -> bool:
    # A claim outlives its sandbox only when a server died mid-teardown; its directory is gone then.
    try:
        return not Path(path.read_text()).is_dir()
    except OSError:
        return False
