"""Running filesystem work as the acting user: worker threads that take the user's filesystem identity.

The agent is the sandbox's root; a call for any other user runs on a worker thread that first takes
that user's filesystem identity for itself alone: `setfsuid`/`setfsgid`, plus the user's
supplementary groups set through the raw `setgroups` system call (glibc's wrapper would change every
thread of the process). Moving the fs uid away from 0 also drops, for that thread, the capabilities
that bypass file permissions. The kernel then checks the call exactly as it checks the user's own
processes (search permission on every directory of the path, symlinks resolved in the sandbox's view,
no gap between check and use), and what the call creates belongs to the user, the outcome envd reaches
by chowning afterwards. Root's calls run without a switch. Uploads are the exception: envd writes
them as root wherever the path leads, and `files.upload` does the same (see there).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import platform
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from e2b_local.agent.users import User

T = TypeVar("T")

# Threads doing filesystem work at once (each holds one blocking call).
WORKERS = 8

_libc = ctypes.CDLL(None, use_errno=True)
# The raw system call number of setgroups, which changes only the calling thread's groups. On an
# architecture missing here a switched thread keeps root's (empty) group list: less access, never more.
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "riscv64": 159, "loongarch64": 159}.get(platform.machine())
_ROOT_GROUPS = tuple(os.getgroups())
# The threads that do blocking filesystem work (and switch identity for it), for the RPCs and `/files`.
WORKER_POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="e2b-fs")


def _set_groups(groups: tuple[int, ...]) -> None:
    if _SYS_SETGROUPS is None:
        return
    array = (ctypes.c_uint * max(len(groups), 1))(*groups)
    if _libc.syscall(_SYS_SETGROUPS, len(groups), array) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setgroups: {os.strerror(err)}")


def _set_fs_ids(uid: int, gid: int) -> None:
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    # Both calls report failure only by returning the old id; an invalid id reads the current one.
    if _libc.setfsuid(0xFFFFFFFF) != uid or _libc.setfsgid(0xFFFFFFFF) != gid:
        raise PermissionError(errno.EPERM, "could not switch the filesystem identity")


def _call_as(user: User, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    if user.uid == 0:
        return fn(*args)
    _set_groups(user.groups)
    try:
        _set_fs_ids(user.uid, user.gid)
        try:
            return fn(*args)
        finally:
            _set_fs_ids(0, 0)
    finally:
        _set_groups(_ROOT_GROUPS)


async def run_as(user: User, fn: Callable[..., T], *args: Any) -> T:
    """Run the blocking `fn(*args)` on a worker thread with `user`'s filesystem permissions."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(WORKER_POOL, _call_as, user, fn, args)
