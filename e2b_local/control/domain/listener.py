"""The HTTPS listener of domain mode: HTTP/1.1 and HTTP/2 (ALPN) on loopback, beside the plain port.

It runs in the server's own event loop and accepts the TLS connections itself. An HTTP/1.1 connection
to a sandbox port is served by the relay (`relay.Http1Relay`), the hot path of a sandbox URL; every
other connection (the API, the agent's ports, HTTP/2) is handed to Hypercorn's connection handler
(the plain port's server has no HTTP/2), which serves the same application. The application's startup
and shutdown belong to the plain port's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp

from e2b_local.control.domain.ca import TlsFiles
from e2b_local.control.domain.relay import ClientGone, HeadTooLong, Http1Relay

log = logging.getLogger("e2b_local")
# Streams (background commands, watches) never end by themselves: do not wait long on them.
GRACEFUL_SECONDS = 2
# Bytes read ahead of the relay before the connection stops reading (it starts again once they are used).
READ_AHEAD = 256 * 1024


class Inbound(asyncio.Protocol):
    """The client's side of one TLS connection: what it sent, buffered until the relay reads it."""

    def __init__(self, listener: HttpsListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost = False
        # Called when the client goes away (the relay closes its connection into the sandbox).
        self.on_lost: Callable[[], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._reading_paused = False
        self._handed_over = False

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.listener.connections.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if self.listener.relay is None or (ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"):
            self.hand_over()
            return
        self.listener.track(asyncio.get_running_loop().create_task(self.listener.relay.serve(self)))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_AHEAD and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self.listener.connections.discard(self)
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self.on_lost is not None:
            self.on_lost()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- what the relay uses -------------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _used(self) -> None:
        if self._reading_paused and len(self.buffer) <= READ_AHEAD // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    async def read_until(self, separator: bytes, limit: int, idle: float | None = None) -> bytes | None:
        """The bytes up to and including `separator`; None when the client closed before sending them all.

        `idle`: seconds to wait for them before closing the connection (between requests).
        """
        start = 0
        while True:
            found = self.buffer.find(separator, start)
            if found >= 0:
                end = found + len(separator)
                data = bytes(self.buffer[:end])
                del self.buffer[:end]
                self._used()
                return data
            if len(self.buffer) > limit:
                raise HeadTooLong
            if self.eof:
                return None
            start = max(0, len(self.buffer) - len(separator) + 1)
            timer = None
            if idle is not None and self.transport is not None:
                timer = asyncio.get_running_loop().call_later(idle, self.transport.close)
            try:
                await self._wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def read(self, size: int) -> bytes:
        """Up to `size` bytes, waiting for some; b"" once the client closed."""
        while not self.buffer:
            if self.eof:
                return b""
            await self._wait()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        self._used()
        return data

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of what is buffered."""
        self.buffer[:0] = data

    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the client is slower than what is written to it; ClientGone once it left."""
        if self.lost:
            raise ClientGone
        while self._writing_paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
            if self.lost:
                raise ClientGone

    def close(self) -> None:
        if self.transport is not None and not self._handed_over:
            self.transport.close()

    def hand_over(self) -> None:
        """Give the connection, and what it sent so far, to Hypercorn's handler of the application."""
        if self.lost or self.transport is None:
            return
        self._handed_over = True
        self.listener.connections.discard(self)
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if self.buffer:
            reader.feed_data(bytes(self.buffer))
            self.buffer.clear()
        if self.eof:
            reader.feed_eof()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        writer = asyncio.StreamWriter(self.transport, protocol, reader, asyncio.get_running_loop())
        self.listener.track(asyncio.get_running_loop().create_task(self.listener.serve_asgi(reader, writer)))


class HttpsListener:
    """Serves `app` over TLS on 127.0.0.1 and ::1 at `port` (both: `*.localhost` resolves to either)."""

    def __init__(self, app: ASGIApp, files: TlsFiles, port: int, relay: Http1Relay | None = None) -> None:
        self.app = wrap_app(app, 0, "asgi")
        self.relay = relay
        self.config = Config()
        self.port = port
        self._sockets: list[socket.socket] = []
        self.config.certfile = str(files.server_cert)
        self.config.keyfile = str(files.server_key)
        # As on the plain port: idle connections outlive the SDK's own pool (300 s).
        self.config.keep_alive_timeout = 330
        self.config.graceful_timeout = GRACEFUL_SECONDS
        self.config.include_server_header = False
        self.config.accesslog = None
        self.config.errorlog = log
        # Large uploads and long streams are the sandbox's business, as on the plain port.
        self.config.h11_max_incomplete_size = 64 * 1024
        self.config.websocket_max_message_size = 64 * 1024 * 1024
        self._context = WorkerContext(None)
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: set[Inbound] = set()

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a connection's task until it ends (and cancel it on stop)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve_asgi(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection with Hypercorn's handler (HTTP/1.1 or HTTP/2) and the application."""
        await TCPServer(self.app, asyncio.get_running_loop(), self.config, self._context, {}, reader, writer)

    def _listen(self, family: socket.AddressFamily, address: str) -> None:
        # IPPROTO_TCP spelled out: asyncio turns Nagle off only on accepted sockets that carry it.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((address, self.port))
        except OSError:
            sock.close()
            if family == socket.AF_INET6:  # a host without IPv6 loopback still serves on 127.0.0.1
                return
            raise
        sock.listen(1024)
        self._sockets.append(sock)

    async def start(self) -> None:
        """Bind the sockets (raising if the port is taken) and start serving."""
        self._listen(socket.AF_INET, "127.0.0.1")
        self._listen(socket.AF_INET6, "::1")
        context = self.config.create_ssl_context()
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            self._servers.append(await loop.create_server(
                lambda: Inbound(self), sock=sock, ssl=context, backlog=1024,
                ssl_handshake_timeout=self.config.ssl_handshake_timeout))
            log.info("Running on https://%s:%d", *sock.getsockname()[:2])

    async def stop(self) -> None:
        """Stop serving, closing open connections after a short grace period."""
        for server in self._servers:
            server.close()
        await self._context.terminated.set()  # Hypercorn's handlers close their idle connections
        for inbound in list(self.connections):
            inbound.close()
        if self._tasks:
            # A stream may never finish by itself: what is still running after the grace period is cancelled.
            _, pending = await asyncio.wait(set(self._tasks), timeout=GRACEFUL_SECONDS)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self._servers.clear()
