"""Mounting on the host: the flags and mount(2) of `e2b_local.linux`, and a forgiving unmount."""

from __future__ import annotations

from pathlib import Path

from e2b_local.linux import (
    MNT_DETACH,
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    mount,
    umount,
)

__all__ = ["MNT_DETACH", "MS_BIND", "MS_NOATIME", "MS_NODEV", "MS_NOEXEC", "MS_NOSUID", "MS_PRIVATE",
           "MS_RDONLY", "MS_REC", "MS_REMOUNT", "mount", "unmount"]


def unmount(path: Path) -> None:
    """Unmount whatever is mounted at `path`, if anything.

    Detached lazily, so that a process that has not quite gone cannot keep the mount busy.
    """
    umount(str(path), MNT_DETACH, missing_ok=True)
