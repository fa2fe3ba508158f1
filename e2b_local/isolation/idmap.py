"""Idmapped mounts: a directory shown with its owners shifted from one host id range to another.

The root filesystems are stored owned by one range and shared by every server; each server's
sandboxes map to a range of their own (idranges.py). An idmapped mount (Linux 5.12+, new mount API)
of each layer presents the stored owners in the server's range, without copying or chowning a file.
"""

from __future__ import annotations

import ctypes
import os
import struct

from e2b_local import linux
from e2b_local.linux import CLONE_NEWUSER

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# The new mount API's system calls have the same numbers on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x00100000


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def shifting_userns(source: int, target: int, count: int) -> int:
    """A user namespace descriptor whose map takes ids `source..+count` to `target..+count`.

    Made by a short-lived child that only creates the namespace; the caller (host root) writes its
    maps. The descriptor keeps the namespace alive after the child has gone.
    """
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(done_w)
            try:
                linux.unshare(CLONE_NEWUSER)
            except OSError:
                os._exit(1)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError("could not create a user namespace for an idmapped mount")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"{source} {target} {count}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.write(done_w, b"1")
        os.close(done_w)
        os.waitpid(pid, 0)


def mount_shifted(source: str, target: str, userns: int, read_only: bool = True) -> None:
    """Mount a view of the directory `source` at `target`, owners mapped through `userns` (read-only unless not)."""
    tree = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    if tree < 0:
        raise _fail(f"open_tree {source}")
    try:
        attr = ctypes.create_string_buffer(struct.pack("QQQQ", MOUNT_ATTR_IDMAP | (MOUNT_ATTR_RDONLY * read_only), 0, 0,
                                                       userns))
        if _libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, attr, len(attr.raw)) < 0:
            raise _fail(f"idmapping {source}")
        if _libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH) < 0:
            raise _fail(f"move_mount to {target}")
    finally:
        os.close(tree)
