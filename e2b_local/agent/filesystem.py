"""envd's `filesystem.Filesystem` service: stat, list, create, move and remove entries, and watch directories.

The caller names the Unix user with `Authorization: Basic` (default: the sandbox's default user);
every call runs with that user's filesystem permissions (see `identity`), on `entries` and `watch`.
"""

from __future__ import annotations

import asyncio
import contextvars
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from e2b.envd.filesystem import filesystem_pb as pb
from e2b.envd.filesystem.filesystem_connect import Filesystem, FilesystemASGIApplication
from protobuf import Oneof
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from e2b_local.agent.connect import CODECS, os_error_to_rpc, request_user, run_checked
from e2b_local.agent.entries import entry_info, list_dir, make_dir, move, remove, require_dir
from e2b_local.agent.identity import run_as
from e2b_local.agent.users import Accounts
from e2b_local.agent.watch import DirectoryWatch

# envd sends a keepalive on a watch stream that has been silent this long (unless the client asks otherwise).
DEFAULT_KEEPALIVE_SECONDS = 50.0

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


class FilesystemService(Filesystem):
    """The service; one instance per agent."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.watchers: dict[str, PollingWatcher] = {}

    async def stat(self, request: pb.StatRequest, ctx: RequestContext) -> pb.StatResponse:
        """The entry at a path (`files.exists`, `files.get_info`)."""
        user = request_user(self.accounts, ctx)
        path = user.resolve(request.path)
        return pb.StatResponse(entry=await run_checked(user, path, entry_info, path))

    async def list_dir(self, request: pb.ListDirRequest, ctx: RequestContext) -> pb.ListDirResponse:
        """A directory's entries down to `depth` levels, the directory itself excluded."""
        user = request_user(self.accounts, ctx)
        path = user.resolve(request.path)
        entries = await run_checked(user, path, list_dir, path, request.depth or 1)
        return pb.ListDirResponse(entries=entries)

    async def make_dir(self, request: pb.MakeDirRequest, ctx: RequestContext) -> pb.MakeDirResponse:
        """Create a directory and its missing parents; `already_exists` if it is there."""
        user = request_user(self.accounts, ctx)
        path = user.resolve(request.path)
        return pb.MakeDirResponse(entry=await run_checked(user, path, make_dir, path))

    async def move(self, request: pb.MoveRequest, ctx: RequestContext) -> pb.MoveResponse:
        """Rename an entry, creating the destination's parent directories."""
        user = request_user(self.accounts, ctx)
        source, destination = user.resolve(request.source), user.resolve(request.destination)
        try:
            entry = await run_as(user, move, source, destination)
        except FileNotFoundError as exc:
            raise os_error_to_rpc(exc, exc.filename or source) from None
        except OSError as exc:
            raise os_error_to_rpc(exc, destination) from None
        return pb.MoveResponse(entry=entry)

    async def remove(self, request: pb.RemoveRequest, ctx: RequestContext) -> pb.RemoveResponse:
        """Remove a file or a whole directory tree (a missing path is not an error)."""
        user = request_user(self.accounts, ctx)
        path = user.resolve(request.path)
        await run_checked(user, path, remove, path)
        return pb.RemoveResponse()

    async def _open_watch(self, ctx: RequestContext, path_arg: str, recursive: bool, include_entry: bool,
                          deliver: Callable[[pb.FilesystemEvent], None]) -> DirectoryWatch:
        user = request_user(self.accounts, ctx)
        path = user.resolve(path_arg)
        await run_checked(user, path, require_dir, path)
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


def filesystem_app(accounts: Accounts) -> ASGIApp:
    """The ASGI application serving `/filesystem.Filesystem/*`."""
    return _DisconnectAware(FilesystemASGIApplication(FilesystemService(accounts), codecs=CODECS))
