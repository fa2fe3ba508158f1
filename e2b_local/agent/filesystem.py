"""envd's `filesystem.Filesystem` service: stat, list, create, move and remove entries, and watch directories.

Acting user and permissions. The caller names the Unix user with `Authorization: Basic` (default
`user`). The agent is the sandbox's root; a call for any other user runs on a worker thread that first
takes that user's filesystem identity for itself alone: `setfsuid`/`setfsgid`, plus the user's
supplementary groups set through the raw `setgroups` system call (glibc's wrapper would change every
thread of the process). Moving the fs uid away from 0 also drops, for that thread, the capabilities
that bypass file permissions. The kernel then checks the call exactly as it checks the user's own
processes (search permission on every directory of the path, symlinks resolved in the sandbox's view,
no gap between check and use), and what the call creates belongs to the user, the outcome envd reaches
by chowning afterwards. Root's calls run without a switch. envd itself does every operation as root,
so there a non-root user can also touch files its permissions forbid; here it cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import errno
import grp
import os
import platform
import posixpath
import pwd
import secrets
import shutil
import stat
import struct
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from e2b.envd.filesystem import filesystem_pb as pb
from e2b.envd.filesystem.filesystem_connect import Filesystem, FilesystemASGIApplication
from protobuf import Oneof
from protobuf.wkt import Timestamp
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from e2b_local.agent.connect import CODECS
from e2b_local.agent.users import UnknownUserError, User, user_from_basic_auth

T = TypeVar("T")

# Extended attributes under this prefix are the file metadata E2B exposes (the prefix is stripped).
METADATA_XATTR_PREFIX = "user.e2b."
# envd sends a keepalive on a watch stream that has been silent this long (unless the client asks otherwise).
DEFAULT_KEEPALIVE_SECONDS = 50.0
# How long a poll for watcher events waits for already queued kernel events to be processed.
SETTLE_SECONDS = 1.0
WORKERS = 8
# Modes of the directories and files envd creates (0777 and 0666 under its umask of 022); passed as
# such, they come out the same whatever umask the agent inherited, unless that one is stricter.
DIR_MODE = 0o755
FILE_MODE = 0o644

_libc = ctypes.CDLL(None, use_errno=True)
# The raw system call number of setgroups, which changes only the calling thread's groups. On an
# architecture missing here a switched thread keeps root's (empty) group list: less access, never more.
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "riscv64": 159, "loongarch64": 159}.get(platform.machine())
_ROOT_GROUPS = tuple(os.getgroups())
# The threads that do blocking filesystem work (and switch identity for it), shared with `/files`.
WORKER_POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="e2b-fs")


# -- running as the acting user --------------------------------------------------------------------

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


def request_user(ctx: RequestContext) -> User:
    """The acting user of an RPC, from its `Authorization: Basic` header."""
    try:
        return user_from_basic_auth(ctx.request_headers.get("authorization"))
    except UnknownUserError as exc:
        raise ConnectError(Code.UNAUTHENTICATED, str(exc)) from None


def os_error_to_rpc(exc: OSError, path: str) -> ConnectError:
    """The Connect error envd would answer for a failed filesystem call on `path`."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return ConnectError(Code.NOT_FOUND, f"file not found: {path}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ConnectError(Code.PERMISSION_DENIED, f"permission denied: {path}")
    if exc.errno == errno.EEXIST:
        return ConnectError(Code.ALREADY_EXISTS, f"already exists: {path}")
    if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG, errno.EINVAL):
        return ConnectError(Code.INVALID_ARGUMENT, f"{path}: {os.strerror(exc.errno)}")
    return ConnectError(Code.INTERNAL, f"{path}: {exc.strerror or exc}")


async def _checked(user: User, path: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return await run_as(user, fn, *args)
    except OSError as exc:
        raise os_error_to_rpc(exc, path) from None


# -- entry information ------------------------------------------------------------------------------

# Go's os.FileMode letters, in the order Go prints them (envd's `permissions` is FileMode.String()).
def go_mode_string(mode: int) -> str:
    """`mode` formatted like Go's `FileMode.String()`, e.g. `-rw-r--r--`, `drwxr-xr-x`, `Lrwxrwxrwx`."""
    kind = stat.S_IFMT(mode)
    letters = ""
    if kind == stat.S_IFDIR:
        letters += "d"
    if kind == stat.S_IFLNK:
        letters += "L"
    if kind in (stat.S_IFBLK, stat.S_IFCHR):
        letters += "D"
    if kind == stat.S_IFIFO:
        letters += "p"
    if kind == stat.S_IFSOCK:
        letters += "S"
    if mode & stat.S_ISUID:
        letters += "u"
    if mode & stat.S_ISGID:
        letters += "g"
    if kind == stat.S_IFCHR:
        letters += "c"
    if mode & stat.S_ISVTX:
        letters += "t"
    bits = "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    return (letters or "-") + bits


def _file_type(mode: int) -> pb.FileType:
    if stat.S_ISREG(mode):
        return pb.FileType.FILE
    if stat.S_ISDIR(mode):
        return pb.FileType.DIRECTORY
    if stat.S_ISLNK(mode):
        return pb.FileType.SYMLINK
    return pb.FileType.UNSPECIFIED


@dataclass
class _Names:
    """uid/gid to name lookups, cached for one request (a listing repeats the same few owners)."""

    users: dict[int, str] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)

    def user(self, uid: int) -> str:
        if uid not in self.users:
            try:
                self.users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.users[uid] = str(uid)
        return self.users[uid]

    def group(self, gid: int) -> str:
        if gid not in self.groups:
            try:
                self.groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self.groups[gid] = str(gid)
        return self.groups[gid]


def read_metadata(target: str | int) -> dict[str, str]:
    """The `user.e2b.*` extended attributes of a path or descriptor, prefix stripped (unreadable ones skipped)."""
    try:
        names = os.listxattr(target)
    except OSError:
        return {}
    metadata: dict[str, str] = {}
    for name in names:
        if not name.startswith(METADATA_XATTR_PREFIX):
            continue
        try:
            metadata[name[len(METADATA_XATTR_PREFIX):]] = os.getxattr(target, name).decode()
        except (OSError, UnicodeDecodeError):
            continue  # set out of band with bytes a proto string cannot carry, or raced away
    return metadata


def entry_info(path: str, names: _Names | None = None) -> pb.EntryInfo:
    """envd's EntryInfo of `path` (not following a final symlink, but describing its target's type)."""
    names = names or _Names()
    st = os.lstat(path)
    target_st: os.stat_result | None = st
    symlink_target: str | None = None
    is_link = stat.S_ISLNK(st.st_mode)
    if is_link:
        try:
            symlink_target = os.path.realpath(path, strict=True)
            target_st = os.stat(path)
        except OSError:
            target_st = None
            try:
                symlink_target = os.readlink(path)
            except OSError:
                symlink_target = path
    # A dangling link keeps the SYMLINK type, so that listings (which drop unknown types) still show it.
    file_type = _file_type(target_st.st_mode) if target_st is not None else pb.FileType.SYMLINK
    mode = stat.S_IMODE(target_st.st_mode) & 0o777 if target_st is not None else 0
    return pb.EntryInfo(
        name=posixpath.basename(path) or "/",
        type=file_type,
        path=path,
        size=st.st_size,
        mode=mode,
        permissions=go_mode_string(st.st_mode),
        owner=names.user(st.st_uid),
        group=names.group(st.st_gid),
        modified_time=Timestamp(seconds=st.st_mtime_ns // 1_000_000_000, nanos=st.st_mtime_ns % 1_000_000_000),
        symlink_target=symlink_target,
        metadata=read_metadata(path) if target_st is not None else {},
        is_symlink=is_link,
    )


def _entry_or_none(path: str) -> pb.EntryInfo | None:
    try:
        return entry_info(path)
    except OSError:
        return None


def _list_dir(path: str, depth: int) -> list[pb.EntryInfo]:
    real = os.path.realpath(path, strict=True)
    if not stat.S_ISDIR(os.stat(real).st_mode):
        raise ConnectError(Code.INVALID_ARGUMENT, f"path is not a directory: {path}")
    names = _Names()
    entries: list[pb.EntryInfo] = []

    def visit(directory: str, level: int) -> None:
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError:
            if level == 1:
                raise
            return  # a subdirectory the user may not read is left out, as `find` would
        for child in children:
            try:
                entries.append(entry_info(child.path, names))
            except OSError:
                continue  # removed while we were listing
            if level < depth and child.is_dir(follow_symlinks=False):
                visit(child.path, level + 1)

    visit(real, 1)
    return entries


def make_dirs(path: str) -> None:
    """`mkdir -p` creating every missing directory with mode 0755, as envd does."""
    if os.path.isdir(path):
        return
    parent = posixpath.dirname(path)
    if parent != path:
        make_dirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def _make_dir(path: str) -> pb.EntryInfo:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            raise ConnectError(Code.ALREADY_EXISTS, f"directory already exists: {path}")
        raise ConnectError(Code.INVALID_ARGUMENT, f"path already exists but it is not a directory: {path}")
    make_dirs(path)
    return entry_info(path)


def _move(source: str, destination: str) -> pb.EntryInfo:
    os.lstat(source)  # a missing source is not_found, before any directory gets created
    make_dirs(posixpath.dirname(destination))
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # An overlay cannot rename a directory that comes from a lower layer: copy it instead.
        shutil.move(source, destination)
    return entry_info(destination)


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # envd removes with RemoveAll, for which a missing path is success
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _require_dir(path: str) -> None:
    if not stat.S_ISDIR(os.stat(path).st_mode):
        raise ConnectError(Code.INVALID_ARGUMENT, f"path {path} is not a directory")


# -- inotify ---------------------------------------------------------------------------------------

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
                added, _ = await _checked(self.user, self.root, _add_tree, inotify, self.root, "", WATCH_MASK)
            else:
                added = [(await _checked(self.user, self.root, inotify.add_watch, self.root, WATCH_MASK), "")]
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
            entry = await run_as(self.user, _entry_or_none, path)
        self.deliver(pb.FilesystemEvent(name=relative, type=event_type, entry=entry))


@dataclass
class PollingWatcher:
    """A watch created by `CreateWatcher`, whose events wait for `GetWatcherEvents`."""

    watch: DirectoryWatch | None = None
    events: list[pb.FilesystemEvent] = field(default_factory=list)


# Set per request by the ASGI wrapper below: fires when the client goes away, so that a silent watch
# stream notices at once rather than at its next keepalive.
_client_gone: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("client_gone", default=None)


def _keepalive_seconds(ctx: RequestContext) -> float:
    try:
        return max(1.0, float(ctx.request_headers.get("keepalive-ping-interval") or DEFAULT_KEEPALIVE_SECONDS))
    except ValueError:
        return DEFAULT_KEEPALIVE_SECONDS


# -- the service -----------------------------------------------------------------------------------

class FilesystemService(Filesystem):
    """The service; one instance per agent."""

    def __init__(self) -> None:
        self.watchers: dict[str, PollingWatcher] = {}

    async def stat(self, request: pb.StatRequest, ctx: RequestContext) -> pb.StatResponse:
        """The entry at a path (`files.exists`, `files.get_info`)."""
        user = request_user(ctx)
        path = user.resolve(request.path)
        return pb.StatResponse(entry=await _checked(user, path, entry_info, path))

    async def list_dir(self, request: pb.ListDirRequest, ctx: RequestContext) -> pb.ListDirResponse:
        """A directory's entries down to `depth` levels, the directory itself excluded."""
        user = request_user(ctx)
        path = user.resolve(request.path)
        entries = await _checked(user, path, _list_dir, path, request.depth or 1)
        return pb.ListDirResponse(entries=entries)

    async def make_dir(self, request: pb.MakeDirRequest, ctx: RequestContext) -> pb.MakeDirResponse:
        """Create a directory and its missing parents; `already_exists` if it is there."""
        user = request_user(ctx)
        path = user.resolve(request.path)
        return pb.MakeDirResponse(entry=await _checked(user, path, _make_dir, path))

    async def move(self, request: pb.MoveRequest, ctx: RequestContext) -> pb.MoveResponse:
        """Rename an entry, creating the destination's parent directories."""
        user = request_user(ctx)
        source, destination = user.resolve(request.source), user.resolve(request.destination)
        try:
            entry = await run_as(user, _move, source, destination)
        except FileNotFoundError as exc:
            raise os_error_to_rpc(exc, exc.filename or source) from None
        except OSError as exc:
            raise os_error_to_rpc(exc, destination) from None
        return pb.MoveResponse(entry=entry)

    async def remove(self, request: pb.RemoveRequest, ctx: RequestContext) -> pb.RemoveResponse:
        """Remove a file or a whole directory tree (a missing path is not an error)."""
        user = request_user(ctx)
        path = user.resolve(request.path)
        await _checked(user, path, _remove, path)
        return pb.RemoveResponse()

    async def _open_watch(self, ctx: RequestContext, path_arg: str, recursive: bool, include_entry: bool,
                          deliver: Callable[[pb.FilesystemEvent], None]) -> DirectoryWatch:
        user = request_user(ctx)
        path = user.resolve(path_arg)
        await _checked(user, path, _require_dir, path)
        watch = DirectoryWatch(path, user, recursive, include_entry, deliver)
        await watch.start()
        return watch

    async def watch_dir(self, request: pb.WatchDirRequest, ctx: RequestContext) -> AsyncIterator[pb.WatchDirResponse]:
        """Stream a directory's events: `start` first, then events and keepalives until the deadline."""
        queue: asyncio.Queue[pb.FilesystemEvent] = asyncio.Queue()
        watch = await self._open_watch(ctx, request.path, request.recursive, request.include_entry, queue.put_nowait)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.timeout_ms / 1000 if ctx.timeout_ms else None
        keepalive = _keepalive_seconds(ctx)
        gone = _client_gone.get()
        try:
            yield pb.WatchDirResponse(event=Oneof("start", pb.WatchDirResponse.StartEvent()))
            while True:
                wait = keepalive if deadline is None else min(keepalive, deadline - loop.time())
                if wait <= 0:
                    raise ConnectError(Code.DEADLINE_EXCEEDED, "the watch reached its timeout")
                getter = asyncio.ensure_future(queue.get())
                waiters: set[asyncio.Future[Any]] = {getter}
                if gone is not None:
                    waiters.add(asyncio.ensure_future(gone.wait()))
                try:
                    done, _ = await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for future in waiters:
                        if not future.done():
                            future.cancel()
                if getter in done:
                    yield pb.WatchDirResponse(event=Oneof("filesystem", getter.result()))
                elif gone is not None and gone.is_set():
                    return
                elif deadline is None or loop.time() < deadline:
                    yield pb.WatchDirResponse(event=Oneof("keepalive", pb.WatchDirResponse.KeepAlive()))
        finally:
            watch.close()

    async def create_watcher(self, request: pb.CreateWatcherRequest, ctx: RequestContext) -> pb.CreateWatcherResponse:
        """Start a watch whose events are collected for `GetWatcherEvents`."""
        watcher = PollingWatcher()
        watcher.watch = await self._open_watch(ctx, request.path, request.recursive, request.include_entry,
                                               watcher.events.append)
        watcher_id = "w" + secrets.token_hex(8)
        self.watchers[watcher_id] = watcher
        return pb.CreateWatcherResponse(watcher_id=watcher_id)

    def _watcher(self, watcher_id: str) -> PollingWatcher:
        watcher = self.watchers.get(watcher_id)
        if watcher is None:
            raise ConnectError(Code.NOT_FOUND, f"watcher with id {watcher_id} not found")
        return watcher

    async def get_watcher_events(self, request: pb.GetWatcherEventsRequest,
                                 ctx: RequestContext) -> pb.GetWatcherEventsResponse:
        """The events of a polling watch since the previous call."""
        watcher = self._watcher(request.watcher_id)
        if watcher.watch is not None:
            await watcher.watch.settle()
        events = list(watcher.events)
        watcher.events.clear()  # in place: the watch appends to this very list
        return pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(self, request: pb.RemoveWatcherRequest, ctx: RequestContext) -> pb.RemoveWatcherResponse:
        """Stop a polling watch."""
        watcher = self._watcher(request.watcher_id)
        del self.watchers[request.watcher_id]
        if watcher.watch is not None:
            watcher.watch.close()
        return pb.RemoveWatcherResponse()


class _DisconnectAware:
    """Wraps the Connect application so that a streaming handler can tell when its client has left."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            return message

        token = _client_gone.set(gone)
        try:
            await self.app(scope, watched_receive, send)
        finally:
            _client_gone.reset(token)


def filesystem_app() -> ASGIApp:
    """The ASGI application serving `/filesystem.Filesystem/*`."""
    return _DisconnectAware(FilesystemASGIApplication(FilesystemService(), codecs=CODECS))
