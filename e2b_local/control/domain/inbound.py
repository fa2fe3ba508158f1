"""The client's side of one TLS connection on the HTTPS listener, and the relay's state on it: the
request in flight and the connection into the sandbox it went on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from e2b_local.control.domain import hosts
from e2b_local.control.domain.buffered import Buffered, TooLong
from e2b_local.control.domain.http1 import Request


class PortPeer(Buffered):
    """A connection to a port on a sandbox's loopback, made in its network namespace."""


Key = tuple[str, int, int]  # sandbox id, port, descriptor of its first process


@dataclass
class Flight:
    """A request sent into the sandbox whose answer has not been passed on yet."""

    request: Request
    peer: PortPeer
    key: Key


@dataclass
class ConnectionState:
    """The relay's state on one client connection."""

    # The coroutine serves the connection's requests (its first one named a sandbox port).
    relaying: bool = False
    # The coroutine waits for the next head: the callbacks may serve a request meanwhile.
    parked: bool = False
    # A request the callbacks sent on, and one they began but left to the coroutine.
    inflight: Flight | None = None
    handoff: Flight | None = None
    # The host of the last request and what it names: a connection's requests name one host.
    host: bytes | None = None
    target: hosts.SandboxHost | None = None


class Owner(Protocol):
    """What an inbound connection needs of the listener that accepted it."""

    connections: set[Inbound]
    relay_serve: Callable[[Inbound], Awaitable[None]] | None

    def track(self, task: asyncio.Task[None]) -> None: ...
    async def serve_asgi(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None: ...


class Inbound(Buffered):
    """The client's side of one TLS connection, as the relay reads it (or Hypercorn, once handed over)."""

    def __init__(self, listener: Owner) -> None:
        super().__init__()
        self.listener = listener
        # The relay's state on this connection (see `relay.Http1Relay`).
        self.state = ConnectionState()
        self._handed_over = False
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.listener.connections.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        serve = self.listener.relay_serve
        if serve is None or (ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"):
            self.hand_over()
            return
        self.listener.track(asyncio.get_running_loop().create_task(serve(self)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        super().connection_lost(exc)

    async def read_head(self, limit: int, idle: float) -> bytes | None:
        """The next request head; None once the client closed (or sent nothing for `idle` seconds).

        While this waits the relay may serve requests from the callbacks (`state.parked`); it returns
        early (None, with `state.handoff` set) when such a request needs the coroutine after all.
        """
        state = self.state
        start = 0
        while True:
            if state.handoff is not None:  # the relay takes it from there
                return None
            if state.inflight is None:
                found = self.buffer.find(b"\r\n\r\n", start)
                if found >= 0:
                    return self.consume(found + 4)
                if len(self.buffer) > limit:
                    raise TooLong
                start = max(0, len(self.buffer) - 3)
            if self.eof:
                return None
            loop = asyncio.get_running_loop()
            self._idle_since = loop.time()
            if self._idle_timer is None:  # one timer per connection, not one per request
                self._idle_timer = loop.call_at(self._idle_since + idle, self._idle_check, idle)
            state.parked = True
            try:
                await self.wait()
            finally:
                state.parked = False
                self._idle_since = None

    def touch(self) -> None:
        """A request was served while the reader waited: the connection is not idle."""
        if self._idle_since is not None:
            self._idle_since = asyncio.get_running_loop().time()

    def _idle_check(self, idle: float) -> None:
        """Close the connection if it has waited `idle` seconds for a request; else look again later."""
        self._idle_timer = None
        if self.lost or self.transport is None or self._handed_over:
            return
        loop = asyncio.get_running_loop()
        since = self._idle_since
        if since is not None and self.state.inflight is None and loop.time() - since >= idle:
            self.transport.close()
            return
        self._idle_timer = loop.call_at((since if since is not None else loop.time()) + idle, self._idle_check, idle)

    def close(self) -> None:
        if not self._handed_over:
            super().close()

    def hand_over(self) -> None:
        """Give the connection, and what it sent so far, to Hypercorn's handler of the application."""
        if self.lost or self.transport is None:
            return
        self._handed_over = True
        self.on_data = None
        self.listener.connections.discard(self)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if self.buffer:
            reader.feed_data(bytes(self.buffer))
            self.buffer.clear()
        if self.eof:
            reader.feed_eof()
        self.transport.resume_reading()
        writer = asyncio.StreamWriter(self.transport, protocol, reader, loop)
        self.listener.track(loop.create_task(self.listener.serve_asgi(reader, writer)))
