"""A volume's files as the content API sees them, confined to the volume's root directory.

The server works on host paths as host root, so every path the client names is resolved by the
kernel inside the volume's root (openat2 with RESOLVE_IN_ROOT): `..` and symbolic links, absolute
ones included, can never leave it, and no mount point inside is crossed. The last component of a
path is then acted on relative to its parent's descriptor, without following it when it is a link.
Owners are stored shifted by `id_base` (the storage range sandboxes' ids are shown from), and
reported as the sandbox sees them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# openat2(2) has the same number on every architecture.
SYS_OPENAT2 = 437
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
# What a file or directory gets when the client names no owner: the sandbox's `user`, as files a
# sandbox's default user writes have.
DEFAULT_UID = 1000
DEFAULT_GID = 1000
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
# Ids a sandbox can hold (0-65535).
ID_RANGE = 65_536
CHUNK = 1024 * 1024


class ContentError(Exception):
    """A content operation that failed in a way the client is told about, with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0, resolve: int = RESOLVE) -> int:
    """openat2(2) with `resolve` (by default: inside `dir_fd`, no magic links, no other mounts)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    while True:
        fd = _libc.syscall(SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err), path)


def normalize(path: str) -> str:
    """The volume path `path` names, absolute and without `.`, `..` or repeated slashes ("/" is the root)."""
    if "\0" in path:
        raise ContentError(400, "path must not contain NUL")
    return posixpath.normpath("/" + path.strip()).replace("//", "/")


@dataclass(frozen=True)
class Entry:
    """An entry's stat, in the content API's `VolumeEntryStat` terms."""

    name: str
    type: str
    path: str
    size: int
    mode: int
    uid: int
    gid: int
    atime: float
    mtime: float
    ctime: float
    target: str | None = None


class VolumeFiles:
    """The files under `root` (a directory of the host), with owners stored shifted by `id_base`."""

    def __init__(self, root: str, id_base: int) -> None:
        self.root = root
        self.id_base = id_base

    @contextlib.contextmanager
    def _root(self) -> Iterator[int]:
        fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _parent(self, path: str, create: bool = False, uid: int = DEFAULT_UID,
                gid: int = DEFAULT_GID) -> Iterator[tuple[int, str]]:
        """(descriptor of the parent directory, last component) of a path other than the root.

        With `create`, missing parent directories are made (owned by `uid`:`gid`).
        """
        path = normalize(path)
        if path == "/":
            raise ContentError(400, "the volume's root cannot be the target of this operation")
        parent, name = posixpath.split(path)
        with self._root() as root:
            try:
                fd = self._open_dir(root, parent, create, uid, gid)
            except FileNotFoundError:
                raise ContentError(404, f"path '{parent}' not found") from None
            except NotADirectoryError:
                raise ContentError(400, f"path '{parent}' is not a directory") from None
            try:
                yield fd, name
            finally:
                os.close(fd)

    def _open_dir(self, root: int, path: str, create: bool, uid: int, gid: int) -> int:
        try:
            return openat2(root, path.lstrip("/") or ".", os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if not create:
                raise
        fd = os.dup(root)
        try:
            for part in [p for p in path.split("/") if p]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, DEFAULT_DIR_MODE, dir_fd=fd)
                    os.chown(part, self.id_base + uid, self.id_base + gid, dir_fd=fd, follow_symlinks=False)
                # Each step again inside the root: a link made meanwhile cannot lead out.
                next_fd = openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY)
                os.close(fd)
                fd = next_fd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _entry(self, st: os.stat_result, path: str, target: str | None = None) -> Entry:
        if stat.S_ISDIR(st.st_mode):
            kind = "directory"
        elif stat.S_ISREG(st.st_mode):
            kind = "file"
        elif stat.S_ISLNK(st.st_mode):
            kind = "symlink"
        else:
            kind = "unknown"
        return Entry(name=posixpath.basename(path) or "/", type=kind, path=path, size=st.st_size,
                     mode=stat.S_IMODE(st.st_mode), uid=self._shown(st.st_uid), gid=self._shown(st.st_gid),
                     atime=st.st_atime, mtime=st.st_mtime, ctime=st.st_ctime, target=target)

    def _shown(self, host_id: int) -> int:
        shown = host_id - self.id_base
        return shown if 0 <= shown < ID_RANGE else 65_534  # the overflow id, as a user namespace shows it

    def _stat_at(self, fd: int, name: str, path: str) -> Entry:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise ContentError(404, f"path '{path}' not found") from None
        target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
        return self._entry(st, path, target)

    def _ids(self, uid: int | None, gid: int | None) -> tuple[int, int]:
        for value, what in ((uid, "uid"), (gid, "gid")):
            if value is not None and not 0 <= value < ID_RANGE:
                raise ContentError(400, f"{what} must be between 0 and {ID_RANGE - 1}")
        return (DEFAULT_UID if uid is None else uid), (DEFAULT_GID if gid is None else gid)

    @staticmethod
    def _mode(mode: int | None, default: int) -> int:
        if mode is None:
            return default
        if not 0 <= mode <= 0o7777:
            raise ContentError(400, "mode must be between 0 and 0o7777")
        return mode

    def stat(self, path: str) -> Entry:
        """The entry at `path` (a link itself, not what it points to)."""
        path = normalize(path)
        if path == "/":
            with self._root() as root:
                return self._entry(os.stat(root), "/")
        with self._parent(path) as (fd, name):
            return self._stat_at(fd, name, path)

    def list(self, path: str, depth: int = 1) -> list[Entry]:
        """The entries under the directory `path`, `depth` levels deep."""
        if depth < 1:
            raise ContentError(400, "depth must be at least 1")
        path = normalize(path)
        with self._root() as root:
            try:
                fd = openat2(root, path.lstrip("/") or ".", os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                raise ContentError(404, f"path '{path}' not found") from None
            except NotADirectoryError:
                raise ContentError(400, f"path '{path}' is not a directory") from None
        try:
            return self._walk(fd, path, depth)
        finally:
            os.close(fd)

    def _walk(self, fd: int, path: str, depth: int) -> list[Entry]:
        found = []
        for name in sorted(os.listdir(fd)):
            child = posixpath.join(path, name)
            entry = self._stat_at(fd, name, child)
            found.append(entry)
            if entry.type == "directory" and depth > 1:
                # O_NOFOLLOW: the entry was a directory a moment ago; a link swapped in is not entered.
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    found += self._walk(sub, child, depth - 1)
                finally:
                    os.close(sub)
        return found

    def make_dir(self, path: str, uid: int | None = None, gid: int | None = None, mode: int | None = None,
                 force: bool = False) -> Entry:
        """Create the directory `path`; with `force`, its missing parents too."""
        path = normalize(path)
        uid, gid = self._ids(uid, gid)
        mode = self._mode(mode, DEFAULT_DIR_MODE)
        with self._parent(path, create=force, uid=uid, gid=gid) as (fd, name):
            try:
                os.mkdir(name, mode, dir_fd=fd)
            except FileExistsError:
                raise ContentError(409, f"path '{path}' already exists") from None
            os.chown(name, self.id_base + uid, self.id_base + gid, dir_fd=fd, follow_symlinks=False)
            os.chmod(name, mode, dir_fd=fd)  # the umask is not applied to what the client asked for
            return self._stat_at(fd, name, path)

    def write(self, path: str, chunks: Iterator[bytes], uid: int | None = None, gid: int | None = None,
              mode: int | None = None, force: bool = False) -> Entry:
        """Create or replace the file `path` with the bytes of `chunks`; with `force`, parents are made."""
        path = normalize(path)
        uid, gid = self._ids(uid, gid)
        mode = self._mode(mode, DEFAULT_FILE_MODE)
        with self._parent(path, create=force, uid=uid, gid=gid) as (fd, name):
            try:
                out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                              dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR):
                    raise ContentError(400, f"path '{path}' is not a regular file") from None
                raise
            try:
                os.fchown(out, self.id_base + uid, self.id_base + gid)
                os.fchmod(out, mode)
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view):]
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ContentError(507, "no space left on the volume") from None
                raise
            finally:
                os.close(out)
            return self._stat_at(fd, name, path)

    def open_file(self, path: str) -> int:
        """A descriptor of the file `path`, for reading (links are followed, inside the volume)."""
        path = normalize(path)
        with self._root() as root:
            try:
                fd = openat2(root, path.lstrip("/") or ".", os.O_RDONLY)
            except FileNotFoundError:
                raise ContentError(404, f"path '{path}' not found") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ContentError(400, f"path '{path}' is not a file")
        return fd

    def read_chunks(self, fd: int) -> Iterator[bytes]:
        """The bytes of an open file, chunk by chunk; the descriptor is closed at the end."""
        try:
            while chunk := os.read(fd, CHUNK):
                yield chunk
        finally:
            os.close(fd)

    def update(self, path: str, uid: int | None = None, gid: int | None = None, mode: int | None = None) -> Entry:
        """Change the owner or mode of the entry at `path` (a link's own owner; a link has no mode)."""
        path = normalize(path)
        for value, what in ((uid, "uid"), (gid, "gid")):
            if value is not None and not 0 <= value < ID_RANGE:
                raise ContentError(400, f"{what} must be between 0 and {ID_RANGE - 1}")
        if path == "/":
            raise ContentError(400, "the volume's root cannot be changed")
        with self._parent(path) as (fd, name):
            current = self._stat_at(fd, name, path)
            if uid is not None or gid is not None:
                os.chown(name, -1 if uid is None else self.id_base + uid, -1 if gid is None else self.id_base + gid,
                         dir_fd=fd, follow_symlinks=False)
            if mode is not None and current.type != "symlink":
                os.chmod(name, self._mode(mode, 0), dir_fd=fd)
            return self._stat_at(fd, name, path)

    def remove(self, path: str) -> None:
        """Delete the entry at `path`; a directory with everything in it."""
        path = normalize(path)
        with self._parent(path) as (fd, name):
            entry = self._stat_at(fd, name, path)
            if entry.type == "directory":
                # rmtree with a dir_fd never follows a link out of the tree.
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)

    def usage(self) -> tuple[int, int]:
        """(bytes used, bytes in total) of the filesystem the volume lives on."""
        st = os.statvfs(self.root)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize
