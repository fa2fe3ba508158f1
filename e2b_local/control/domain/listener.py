"""The HTTPS listener of domain mode: HTTP/1.1 and HTTP/2 (ALPN) on loopback, beside the plain port.

It runs in the server's own event loop (Hypercorn: the plain port's server has no HTTP/2), and
serves the same application; the application's startup and shutdown belong to the plain port's
server, so this one is answered them without passing them on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.types import ASGIApp, Receive, Scope, Send

from e2b_local.control.domain.ca import TlsFiles

log = logging.getLogger("e2b_local")
# As on the plain port: idle connections outlive the SDK's own pool (300 s).
KEEP_ALIVE_SECONDS = 330
# Streams (background commands, watches) never end by themselves: do not wait long on them.
GRACEFUL_SECONDS = 2


class HttpsListener:
    """Serves `app` over TLS on 127.0.0.1 and ::1 at `port` (both: `*.localhost` resolves to either)."""

    def __init__(self, app: ASGIApp, files: TlsFiles, port: int) -> None:
        self.app = app
        self.config = Config()
        self.port = port
        self._sockets: list[socket.socket] = []
        self.config.certfile = str(files.server_cert)
        self.config.keyfile = str(files.server_key)
        self.config.keep_alive_timeout = KEEP_ALIVE_SECONDS
        self.config.graceful_timeout = GRACEFUL_SECONDS
        self.config.include_server_header = False
        self.config.accesslog = None
        self.config.errorlog = log
        # Large uploads and long streams are the sandbox's business, as on the plain port.
        self.config.h11_max_incomplete_size = 64 * 1024
        self.config.websocket_max_message_size = 64 * 1024 * 1024
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await self.app(scope, receive, send)

    def _listen(self, family: socket.AddressFamily, address: str) -> None:
        sock = socket.socket(family, socket.SOCK_STREAM)
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
        # Hypercorn takes the descriptors it is given and closes them itself: it gets copies.
        self.config.bind = [f"fd://{os.dup(sock.fileno())}" for sock in self._sockets]
        self._task = asyncio.create_task(serve(self._app, self.config, shutdown_trigger=self._stop.wait,
                                               mode="asgi"))

    async def stop(self) -> None:
        """Stop serving, closing open connections after a short grace period."""
        self._stop.set()
        if self._task is not None:
            # Hypercorn waits for open connections to finish; an idle keep-alive one may never do so.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, GRACEFUL_SECONDS + 1)
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
