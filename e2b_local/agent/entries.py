"""Filesystem entries as envd describes them (`EntryInfo`), and the blocking operations on them.

Every function here runs on a worker thread with the acting user's identity (see `identity.run_as`).
"""

from __future__ import annotations

import errno
import grp
import os
import posixpath
import pwd
import shutil
import stat
from dataclasses import dataclass, field

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb as pb
from protobuf.wkt import Timestamp

# Extended attributes under this prefix are the file metadata E2B exposes (the prefix is stripped).
METADATA_XATTR_PREFIX = "user.e2b."
# Modes of the directories and files envd creates (0777 and 0666 under its umask of 022); passed as
# such, they come out the same whatever umask the agent inherited, unless that one is stricter.
DIR_MODE = 0o755
FILE_MODE = 0o644


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
class Names:
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


def entry_info(path: str, names: Names | None = None) -> pb.EntryInfo:
    """envd's EntryInfo of `path` (not following a final symlink, but describing its target's type)."""
    names = names or Names()
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


def entry_or_none(path: str) -> pb.EntryInfo | None:
    """`entry_info(path)`, or None when the entry is gone or unreadable."""
    try:
        return entry_info(path)
    except OSError:
        return None


def list_dir(path: str, depth: int) -> list[pb.EntryInfo]:
    """The entries below directory `path` down to `depth` levels, sorted by name within each directory."""
    real = os.path.realpath(path, strict=True)
    if not stat.S_ISDIR(os.stat(real).st_mode):
        raise ConnectError(Code.INVALID_ARGUMENT, f"path is not a directory: {path}")
    names = Names()
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


def make_dir(path: str) -> pb.EntryInfo:
    """Create directory `path` and its parents; refuses a path that exists already."""
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


def move(source: str, destination: str) -> pb.EntryInfo:
    """Rename `source` to `destination`, creating the destination's parents."""
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


def remove(path: str) -> None:
    """Remove a file or a whole directory tree (a missing path is not an error)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # envd removes with RemoveAll, for which a missing path is success
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def require_dir(path: str) -> None:
    """Raise unless `path` is a directory."""
    if not stat.S_ISDIR(os.stat(path).st_mode):
        raise ConnectError(Code.INVALID_ARGUMENT, f"path {path} is not a directory")
