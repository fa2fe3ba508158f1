"""A connection whose incoming bytes are buffered for a reader: both sides of the HTTP/1.1 relay.

Each side is a plain asyncio protocol, so that the relay can act on bytes as they arrive (from the
callback itself) and a coroutine can also read them (`read_until`, `read`), with flow control both ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Bytes read ahead of the reader before the connection stops reading (it starts again once they are used).
READ_AHEAD = 256 * 1024


class Closed(Exception):
    """The other side closed the connection (or it broke)."""


class TooLong(Exception):
    """No separator within the limit the reader set."""


class Buffered(asyncio.Protocol):
    """One connection: what the other side sent, buffered until it is read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost = False
        # Called when bytes arrive or the connection ends; a waiting reader is woken unless it returns True.
        self.on_data: Callable[[], bool] | None = None
        # Called once the connection is gone.
        self.on_lost: Callable[[], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._reading_paused = False

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_AHEAD and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        if self.on_data is None or not self.on_data():
            self.wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.on_data is None or not self.on_data():
            self.wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        if self.on_data is None or not self.on_data():
            self.wake()
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

    # -- reading -------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Wake the coroutine waiting for bytes, if one is."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Wait for more bytes (or the end of the connection)."""
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def consume(self, size: int) -> bytes:
        """Take `size` bytes from the front of the buffer."""
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        if self._reading_paused and len(self.buffer) <= READ_AHEAD // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def read_until(self, separator: bytes, limit: int) -> bytes | None:
        """The bytes up to and including `separator`; None when the connection ended first."""
        start = 0
        while True:
            found = self.buffer.find(separator, start)
            if found >= 0:
                return self.consume(found + len(separator))
            if len(self.buffer) > limit:
                raise TooLong
            if self.eof:
                return None
            start = max(0, len(self.buffer) - len(separator) + 1)
            await self.wait()

    async def read(self, size: int) -> bytes:
        """Up to `size` bytes, waiting for some; b"" once the connection ended."""
        while not self.buffer:
            if self.eof:
                return b""
            await self.wait()
        return self.consume(size)

    async def read_exactly(self, size: int) -> bytes:
        """`size` bytes; Closed if the connection ends before."""
        while len(self.buffer) < size:
            if self.eof:
                raise Closed
            await self.wait()
        return self.consume(size)

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of what is buffered."""
        self.buffer[:0] = data

    # -- writing -------------------------------------------------------------------------------------
    @property
    def writing_paused(self) -> bool:
        """Whether the transport asked for no more writes until it has sent what it holds."""
        return self._writing_paused

    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the other side is slower than what is written to it; Closed once it is gone."""
        if self.lost:
            raise Closed
        while self._writing_paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
            if self.lost:
                raise Closed

    @property
    def closing(self) -> bool:
        """Whether the connection is closed or being closed."""
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
