"""mount(2) and umount2(2), which Python's standard library does not wrap, and their flags."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

# From <sys/mount.h>.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """mount(2); raises OSError naming what failed."""
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or source} on {target}: {os.strerror(err)}")


def unmount(path: Path) -> None:
    """Unmount whatever is mounted at `path`, if anything.

    Detached lazily, so that a process that has not quite gone cannot keep the mount busy.
    """
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more), or no such path
            raise OSError(err, f"unmounting {path}: {os.strerror(err)}")
