"""envd's `/files` routes: download (`GET`) and upload (`POST`: multipart, octet-stream, gzip, metadata).

Access is checked by the host before a request gets here (the access token, or a URL signed with it
by `download_url()`/`upload_url()`). The acting user comes from the `username` query parameter
(default `user`). Downloads run with that user's permissions (see `identity.run_as`), so what they
forbid fails with 403. Uploads run as the sandbox's root, as envd's do: missing parent directories
are created and, like the file, handed to the acting user (who has passwordless sudo in the sandbox
anyway, so this reaches nothing the user could not reach).

Multipart bodies are read with `multipart.MultipartReader`, so that parts are streamed to disk as
they arrive and each part's destination is its raw `filename`, directories included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import mimetypes
import os
import posixpath
import re
import stat
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from e2b_local.agent.entries import DIR_MODE, FILE_MODE, METADATA_XATTR_PREFIX
from e2b_local.agent.identity import WORKER_POOL, run_as
from e2b_local.agent.multipart import MultipartError, MultipartReader, disposition_params
from e2b_local.agent.users import Accounts, UnknownUserError, User

READ_CHUNK = 256 * 1024
# Uploaded data is gathered up to this size before each write, to keep thread hand-offs few.
WRITE_BATCH = 256 * 1024
# The Linux limit on an xattr name is 255 bytes, prefix included; envd caps all metadata at 4 KiB.
MAX_METADATA_KEY = 255 - len(METADATA_XATTR_PREFIX)
MAX_METADATA_TOTAL = 4096
METADATA_HEADER_PREFIX = "x-metadata-"
# Uploads are written as the sandbox's root and then handed to the acting user, as envd writes them.
ROOT = User("root", 0, 0, "/root", (0,))
_PRINTABLE_ASCII = re.compile(r"\A[\x20-\x7e]*\Z")


class FilesError(Exception):
    """An error answered as envd's JSON `{"code": <status>, "message": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        """The error as envd's JSON answer."""
        return JSONResponse({"code": self.status, "message": self.message}, status_code=self.status)


def _acting_user(accounts: Accounts, username: str | None) -> User:
    try:
        return accounts.by_name(username)
    except UnknownUserError as exc:
        raise FilesError(401, f"error looking up user '{username}': {exc}") from None


def _os_error(exc: OSError, path: str) -> FilesError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FilesError(507, "not enough disk space available")
    if exc.errno in (errno.ENOENT,):
        return FilesError(404, f"path '{path}' does not exist")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return FilesError(403, f"permission denied: '{path}'")
    if exc.errno == errno.EISDIR:
        return FilesError(400, f"path is a directory: {path}")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP, errno.ENXIO):
        return FilesError(400, f"invalid path '{path}': {os.strerror(exc.errno)}")
    return FilesError(500, f"error accessing '{path}': {exc.strerror or exc}")


class _Descriptor:
    """An open file whose blocking reads and writes run on the worker threads.

    It is closed only once no read or write on it is still running, so that a cancelled request
    never leaves a worker using a descriptor number that has been closed and reused.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending: concurrent.futures.Future[Any] | None = None
        self._closed = False

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(fd, *args)` on a worker thread."""
        self._pending = WORKER_POOL.submit(fn, self.fd, *args)
        return await asyncio.wrap_future(self._pending)

    def close(self) -> None:
        """Close now, or as soon as the running read or write returns."""
        if self._closed:
            return
        self._closed = True
        pending = self._pending
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _done: os.close(self.fd))
        else:
            os.close(self.fd)


# -- download --------------------------------------------------------------------------------------

def _open_for_read(path: str) -> int:
    # Non-blocking open so that a FIFO without a writer cannot hold a worker thread.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise FilesError(400, f"path '{path}' is a directory")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


async def _chunks(file: _Descriptor) -> AsyncIterator[bytes]:
    while chunk := await file.run(os.read, READ_CHUNK):
        yield chunk


class _FileResponse(StreamingResponse):
    """A streamed file that is closed however the response ends (even before its first chunk)."""

    def __init__(self, file: _Descriptor, media_type: str) -> None:
        super().__init__(_chunks(file), media_type=media_type)
        self.file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.file.close()


async def download(accounts: Accounts, request: Request) -> Response:
    """`GET /files?path=...`: the file's bytes, streamed."""
    query = request.query_params
    path_arg = query.get("path") or ""
    try:
        user = _acting_user(accounts, query.get("username"))
        path = user.resolve(path_arg)
        try:
            fd = await run_as(user, _open_for_read, path)
        except NotADirectoryError:
            raise FilesError(404, f"path '{path}' does not exist") from None  # a file used as a directory
        except OSError as exc:
            raise _os_error(exc, path) from None
    except FilesError as exc:
        return exc.response()
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return _FileResponse(_Descriptor(fd), media_type)


# -- upload ----------------------------------------------------------------------------------------

def _metadata_from_headers(request: Request) -> dict[str, str]:
    metadata: dict[str, str] = {}
    total = 0
    for name, value in request.headers.items():
        if not name.startswith(METADATA_HEADER_PREFIX):
            continue
        key = name[len(METADATA_HEADER_PREFIX):].lower()
        if not key or len(key) > MAX_METADATA_KEY or not _PRINTABLE_ASCII.match(key):
            raise FilesError(400, f"invalid metadata key {key!r}")
        if not _PRINTABLE_ASCII.match(value):
            raise FilesError(400, f"metadata value for key {key!r} must be printable ASCII")
        metadata[key] = value
        total += len(METADATA_XATTR_PREFIX) + len(key) + len(value)
    if total > MAX_METADATA_TOTAL:
        raise FilesError(400, f"total metadata size {total} exceeds {MAX_METADATA_TOTAL} bytes")
    return metadata


def _write_metadata(fd: int, metadata: dict[str, str]) -> None:
    """Replace the file's `user.e2b.*` attributes (truncating a file keeps its old ones)."""
    try:
        for name in os.listxattr(fd):
            if name.startswith(METADATA_XATTR_PREFIX) and name[len(METADATA_XATTR_PREFIX):] not in metadata:
                os.removexattr(fd, name)
        for key, value in metadata.items():
            os.setxattr(fd, METADATA_XATTR_PREFIX + key, value.encode())
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


def _make_dirs_owned(path: str, uid: int, gid: int) -> None:
    """`mkdir -p` as root, handing every directory it creates to `uid`:`gid` (envd's EnsureDirs)."""
    if os.path.isdir(path):
        return
    parent = posixpath.dirname(path)
    if parent != path:
        _make_dirs_owned(parent, uid, gid)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    os.chown(path, uid, gid)


def _open_for_write(path: str, uid: int, gid: int, metadata: dict[str, str]) -> int:
    """Open `path` for writing as root and hand it to `uid`:`gid`, as envd does for every upload."""
    _make_dirs_owned(posixpath.dirname(path), uid, gid)
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise FilesError(400, f"path is a directory: {path}")
    # An existing file changes hands before it is truncated, a new one right after it is created:
    # a watcher sees CREATE, CHMOD, WRITE for a new file, as on E2B.
    if existing is not None and stat.S_ISREG(existing.st_mode):
        os.chown(path, uid, gid)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        # Devices and pipes are written to as they are, without owner or metadata changes.
        if stat.S_ISREG(st.st_mode):
            if existing is None:
                os.fchown(fd, uid, gid)
            _write_metadata(fd, metadata)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def _store(user: User, path: str, chunks: AsyncIterator[bytes], metadata: dict[str, str]) -> dict[str, Any]:
    """Write `chunks` to `path` as `user`; returns the upload answer's entry for it."""
    try:
        file = _Descriptor(await run_as(ROOT, _open_for_write, path, user.uid, user.gid, metadata))
    except OSError as exc:
        raise _os_error(exc, path) from None
    try:
        batch = bytearray()
        async for chunk in chunks:
            batch += chunk
            if len(batch) >= WRITE_BATCH:
                await file.run(_write_all, bytes(batch))
                batch.clear()
        if batch:
            await file.run(_write_all, bytes(batch))
    except OSError as exc:
        raise _os_error(exc, path) from None
    finally:
        file.close()
    info: dict[str, Any] = {"path": path, "name": posixpath.basename(path), "type": "file"}
    if metadata:
        info["metadata"] = metadata
    return info


async def _gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Decompress a gzip body as it streams in (several concatenated members allowed)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    fed = False
    async for chunk in chunks:
        data = chunk
        while data:
            fed = True
            # Bounded output per step, so that a small, highly compressed body cannot balloon in memory.
            out = decompressor.decompress(data, READ_CHUNK)
            if out:
                yield out
            if decompressor.eof:
                data = decompressor.unused_data
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                fed = False
            else:
                data = decompressor.unconsumed_tail
    tail = decompressor.flush()
    if tail:
        yield tail
    if fed and not decompressor.eof:
        raise zlib.error("the gzip body ended early")


def _boundary(content_type: str) -> bytes:
    boundary = disposition_params(content_type).get("boundary")
    if not boundary:
        raise FilesError(400, "the multipart body has no boundary")
    return boundary.encode("latin-1")


async def _upload_multipart(request: Request, body: AsyncIterator[bytes], user: User, path_arg: str | None,
                            metadata: dict[str, str]) -> list[dict[str, Any]]:
    reader = MultipartReader(body, _boundary(request.headers.get("content-type", "")))
    written: list[dict[str, Any]] = []
    while (headers := await reader.next_part()) is not None:
        params = disposition_params(headers.get("content-disposition", ""))
        if params.get("name") != "file":
            continue
        # A `path` query parameter applies to every part; otherwise the part's filename is its destination.
        target = path_arg if path_arg is not None else params.get("filename")
        if target is None:
            raise FilesError(400, "filename not found in Content-Disposition header")
        path = user.resolve(target)
        if any(item["path"] == path for item in written):
            raise FilesError(400, f"you cannot upload multiple files to the same path '{path}' in one upload "
                                  "request, only the first specified file was uploaded")
        written.append(await _store(user, path, reader.part_chunks(), metadata))
    return written


async def _write_request(accounts: Accounts, request: Request, raw: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    query = request.query_params
    path_arg = query.get("path")
    user = _acting_user(accounts, query.get("username"))
    metadata = _metadata_from_headers(request)
    body = raw
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding == "gzip":
        body = _gunzip(raw)
    elif encoding not in ("", "identity"):
        raise FilesError(400, f"unsupported Content-Encoding '{encoding}'")
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        return await _upload_multipart(request, body, user, path_arg, metadata)
    # Any other body is the file's content (the SDK sends application/octet-stream).
    if not path_arg:
        raise FilesError(400, "the path query parameter is required for a raw upload")
    return [await _store(user, user.resolve(path_arg), body, metadata)]


async def _drain(raw: AsyncIterator[bytes]) -> None:
    # A refused upload's body is still read, so that the host's connection to the agent ends the
    # request cleanly and can be reused (an unread body makes the server drop the connection).
    with contextlib.suppress(ClientDisconnect, RuntimeError):
        async for _chunk in raw:
            pass


async def upload(accounts: Accounts, request: Request) -> Response:
    """`POST /files`: write one or several files; answers `[{"path", "name", "type": "file"}, ...]`."""
    raw = request.stream()
    try:
        return JSONResponse(await _write_request(accounts, request, raw))
    except FilesError as exc:
        error = exc
    except (MultipartError, zlib.error) as exc:
        error = FilesError(400, f"error reading the upload: {exc}")
    except ClientDisconnect:
        return FilesError(400, "the client disconnected during the upload").response()
    await _drain(raw)
    return error.response()


def routes(accounts: Accounts) -> list[Route]:
    """envd's `/files` routes, for users looked up in `accounts`."""

    async def get(request: Request) -> Response:
        return await download(accounts, request)

    async def post(request: Request) -> Response:
        return await upload(accounts, request)

    return [
        Route("/files", get, methods=["GET"]),
        Route("/files", post, methods=["POST"]),
    ]
