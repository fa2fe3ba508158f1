"""Watching directories with inotify, turned into envd's `FilesystemEvent`s.

Watches are added as the acting user (on a worker thread, see `identity.run_as`), so the kernel
checks that user's permissions for each watched directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import posixpath
import struct
import threading
from collections.abc import Callable

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb as pb

from e2b_local.agent.connect import run_checked
from e2b_local.agent.entries import entry_or_none
from e2b_local.agent.identity import run_as
from e2b_local.agent.users import User

# How long a poll for watcher events waits for already queued kernel events to be processed.
SETTLE_SECONDS = 1.0

_libc = ctypes.CDLL(None, use_errno=True)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# What fsnotify (envd's watcher library) asks the kernel for.
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF)
_EVENT_HEADER = struct.Struct("iIII")
# Raw mask bits to event types, in the order envd reports the types of one raw event.
_EVENT_TYPES = (
    (IN_CREATE | IN_MOVED_TO, pb.EventType.CREATE),
    (IN_MOVED_FROM | IN_MOVE_SELF, pb.EventType.RENAME),
    (IN_ATTRIB, pb.EventType.CHMOD),
    (IN_MODIFY, pb.EventType.WRITE),
    (IN_DELETE | IN_DELETE_SELF, pb.EventType.REMOVE),
)


class Inotify:
    """One inotify instance. Watches are added from worker threads (as the acting user) while the event
    loop reads events, so the descriptor is closed under a lock: never while a worker still uses it."""

    def __init__(self) -> None:
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._lock = threading.Lock()

    def add_watch(self, path: str, mask: int) -> int:
        """Watch `path` for `mask` (permission checks apply to the calling thread); returns the descriptor."""
        with self._lock:
            if self.fd < 0:
                raise OSError(errno.EBADF, "the watch was closed")
            wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
            if wd < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), path)
            return wd

    def rm_watch(self, wd: int) -> None:
        """Stop one watch."""
        with self._lock:
            if self.fd >= 0:
                _libc.inotify_rm_watch(self.fd, wd)

    def close(self) -> None:
        """Release the instance and all its watches."""
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def _add_tree(inotify: Inotify, root: str, relative: str, first_mask: int) -> tuple[list[tuple[int, str]], list[str]]:
    """Watch `root` and every directory below it.

    Returns the watches as (descriptor, directory relative to the watched root) and every entry found
    below `root`. Each directory is watched before it is listed, so an entry created meanwhile is
    either in the listing or reported by the kernel.
    """
    added = [(inotify.add_watch(root, first_mask), relative)]
    found: list[str] = []
    for directory, subdirs, files in os.walk(root):
        base = posixpath.join(relative, posixpath.relpath(directory, root)) if directory != root else relative
        for name in subdirs:
            path = posixpath.join(directory, name)
            found.append(posixpath.join(base, name))
            try:
                wd = inotify.add_watch(path, WATCH_MASK | IN_ONLYDIR | IN_DONT_FOLLOW)
            except OSError:
                continue  # unreadable for this user, a symlink, or gone already
            added.append((wd, posixpath.join(base, name)))
        found.extend(posixpath.join(base, name) for name in files)
    return added, found


class DirectoryWatch:
    """Filesystem events under one directory (and optionally its subdirectories), as envd reports them.

    The kernel's events are read on the event loop and handed, in order, to one task that turns them
    into `FilesystemEvent`s: it adds watches for directories created under a recursive watch (before
    looking at later events), and stats entries as the acting user when `include_entry` is set.
    """

    def __init__(self, root: str, user: User, recursive: bool, include_entry: bool,
                 deliver: Callable[[pb.FilesystemEvent], None]) -> None:
        self.root = root
        self.user = user
        self.recursive = recursive
        self.include_entry = include_entry
        self.deliver = deliver
        self.inotify: Inotify | None = None
        self.paths: dict[int, str] = {}  # watch descriptor -> directory relative to root ("" is root)
        self.raw: asyncio.Queue[tuple[int, int, str]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Watch the tree; raises ConnectError when the directory cannot be watched."""
        try:
            inotify = Inotify()
        except OSError as exc:
            raise ConnectError(Code.INTERNAL, f"error creating watcher: {exc.strerror}") from None
        try:
            if self.recursive:
                added, _ = await run_checked(self.user, self.root, _add_tree, inotify, self.root, "", WATCH_MASK)
            else:
                added = [(await run_checked(self.user, self.root, inotify.add_watch, self.root, WATCH_MASK), "")]
        except BaseException:
            inotify.close()
            raise
        self.inotify = inotify
        self.paths.update(added)
        asyncio.get_running_loop().add_reader(inotify.fd, self._readable)
        self.task = asyncio.create_task(self._process())

    def close(self) -> None:
        """Stop watching and release the inotify instance."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.inotify is not None:
            asyncio.get_running_loop().remove_reader(self.inotify.fd)
            self.inotify.close()
            self.inotify = None

    def _readable(self) -> None:
        if self.inotify is None:
            return
        try:
            data = os.read(self.inotify.fd, 64 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        offset = 0
        while offset + _EVENT_HEADER.size <= len(data):
            wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
            offset += _EVENT_HEADER.size
            name = os.fsdecode(data[offset:offset + length].split(b"\0", 1)[0])
            offset += length
            self.raw.put_nowait((wd, mask, name))

    async def settle(self) -> None:
        """Return once every event the kernel has queued so far has been delivered."""
        self._readable()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.raw.join(), SETTLE_SECONDS)

    async def _process(self) -> None:
        while True:
            item = await self.raw.get()
            try:
                await self._handle(*item)
            finally:
                self.raw.task_done()

    async def _handle(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_IGNORED:
            self.paths.pop(wd, None)
            return
        directory = self.paths.get(wd)
        if directory is None:
            return
        if not name and directory:
            return  # a subdirectory's own event: its parent's watch reports it by name
        # The watched directory's own events (deleted, moved, chmod) carry no name; envd names them ".".
        relative = posixpath.join(directory, name) if name else "."
        for bits, event_type in _EVENT_TYPES:
            if mask & bits:
                await self._emit(relative, event_type)
        if self.recursive and mask & IN_ISDIR and name:
            await self._track_directory(mask, relative)

    async def _track_directory(self, mask: int, relative: str) -> None:
        if mask & (IN_MOVED_FROM | IN_DELETE):
            prefix = relative + "/"
            for wd, path in list(self.paths.items()):
                if path == relative or path.startswith(prefix):
                    del self.paths[wd]
                    if self.inotify is not None:
                        self.inotify.rm_watch(wd)
        elif mask & (IN_CREATE | IN_MOVED_TO) and self.inotify is not None:
            path = posixpath.join(self.root, relative)
            mask_bits = WATCH_MASK | IN_ONLYDIR | IN_DONT_FOLLOW
            try:
                added, found = await run_as(self.user, _add_tree, self.inotify, path, relative, mask_bits)
            except OSError:
                return  # gone again, or not readable by this user
            self.paths.update(added)
            # What was created inside before the watch existed has no kernel event: report it here
            # (`write("a/b/c.txt")` makes the directories and the file at once).
            for entry in found:
                await self._emit(entry, pb.EventType.CREATE)

    async def _emit(self, relative: str, event_type: pb.EventType) -> None:
        entry = None
        if self.include_entry and event_type not in (pb.EventType.REMOVE, pb.EventType.RENAME):
            path = self.root if relative == "." else posixpath.join(self.root, relative)
            entry = await run_as(self.user, entry_or_none, path)
        self.deliver(pb.FilesystemEvent(name=relative, type=event_type, entry=entry))
