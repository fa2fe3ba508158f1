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
from typing import Any

from h2.errors import ErrorCodes
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp, Receive, Scope, Send

from e2b_local.control.domain.ca import TlsFiles
from e2b_local.control.domain.inbound import Inbound
from e2b_local.control.domain.relay import Http1Relay
from e2b_local.control.router import RESET_EXTENSION, abort_transport

log = logging.getLogger("e2b_local")
# Streams (background commands, watches) never end by themselves: do not wait long on them.
GRACEFUL_SECONDS = 2


def with_stream_reset(app: ASGIApp) -> ASGIApp:
    """`app`, given in each HTTP scope a way to reset the client's stream (see `router.reset_client`).

    Hypercorn keeps an HTTP/2 stream whose application returned mid-answer open for good (the client
    waits forever) and closes an HTTP/1.1 one in order; ASGI has no way to ask for a reset.
    """

    async def with_reset(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}),
                                             RESET_EXTENSION: lambda: _reset_stream(send)}}
        await app(scope, receive, send)

    return with_reset


async def _reset_stream(send: Any) -> None:
    """Reset the stream that Hypercorn's `send` answers on: RST_STREAM on HTTP/2, a TCP reset on HTTP/1.1."""
    stream = getattr(send, "__self__", None)  # the request's HTTPStream
    protocol = getattr(getattr(stream, "send", None), "__self__", None)
    if isinstance(protocol, H2Protocol):
        # What Go's HTTP/2 server (E2B's proxy) sends for an answer broken off; the connection's
        # other streams go on.
        protocol.connection.reset_stream(stream.stream_id, ErrorCodes.INTERNAL_ERROR)
        await protocol._flush()
        # As for a stream the client reset: its send buffer is dropped by the send task.
        await protocol._window_updated(stream.stream_id)
    elif isinstance(protocol, H11Protocol):
        writer = getattr(getattr(protocol.send, "__self__", None), "writer", None)  # Hypercorn's TCPServer
        if writer is not None:
            abort_transport(writer.transport)


class HttpsListener:
    """Serves `app` over TLS on 127.0.0.1 and ::1 at `port` (both: `*.localhost` resolves to either)."""

    def __init__(self, app: ASGIApp, files: TlsFiles, port: int, relay: Http1Relay | None = None) -> None:
        self.app = wrap_app(with_stream_reset(app), 0, "asgi")
        self.relay_serve = relay.serve if relay is not None else None
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
