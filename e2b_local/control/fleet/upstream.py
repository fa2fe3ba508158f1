"""HTTP/1.1 to a sandbox agent over its Unix socket, kept minimal for the proxy's hot path.

The router forwards every envd and code-interpreter request, so this path is as thin as we can make
it: raw asyncio streams, keep-alive connections reused per sandbox, request bodies forwarded as they
arrive (re-chunked), and response bodies handed on chunk by chunk, so that every Connect envelope and
NDJSON line reaches the client when the agent writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

# Idle connections kept per sandbox: the SDK rarely has more requests than this in flight at once.
MAX_IDLE = 8
# Read size for bodies without chunked framing (file downloads, fixed-length answers).
READ_SIZE = 64 * 1024
# Headers longer than this are not a sane agent answer.
MAX_HEAD = 64 * 1024
# Nor is a chunk's size line longer than this.
MAX_CHUNK_LINE = 1024
# An idle connection is let go well before the agent closes it (its keep-alive is 600 s): reusing one
# at the moment the agent closes it would fail the request sent on it.
IDLE_SECONDS = 300.0


class UpstreamError(Exception):
    """The agent could not be reached, or answered with something that is not HTTP."""


@dataclass
class Connection:
    """One keep-alive connection to the agent."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def close(self) -> None:
        self.writer.close()


class UpstreamResponse:
    """The agent's answer: status, headers, and a body read on demand."""

    def __init__(self, pool: AgentUpstream, conn: Connection, status: int, headers: list[tuple[bytes, bytes]],
                 length: int | None, chunked: bool, head_only: bool) -> None:
        self.status = status
        self.headers = headers
        self._pool = pool
        self._conn: Connection | None = conn
        self._length = length
        self._chunked = chunked
        self._done = head_only or (length == 0)
        self.streaming = chunked or length is None
        # False when the other side closes the connection after this answer (HTTP/1.0, `connection: close`).
        self.keep_alive = True

    async def pieces(self) -> AsyncIterator[tuple[bytes, bool]]:
        """The body as it arrives, with whether more follows: what arrived together is one piece.

        Chunks the agent wrote at once go on as one, and the last goes with the end of the body, so
        that the client gets one write for them instead of one per chunk and one for the end.
        """
        conn = self._conn
        if conn is None or self._done:
            yield b"", False
            return
        reader = conn.reader
        if self._chunked:
            async for piece in self._chunked_pieces(reader):
                yield piece
        elif self._length is not None:
            remaining = self._length
            while remaining:
                data = await reader.read(min(remaining, READ_SIZE))
                if not data:
                    raise UpstreamError("the agent closed the connection mid-body")
                remaining -= len(data)
                yield data, remaining > 0
        else:
            while data := await reader.read(READ_SIZE):
                yield data, True
            self.close()
            yield b"", False
            return
        self._done = True

    async def _chunked_pieces(self, reader: asyncio.StreamReader) -> AsyncIterator[tuple[bytes, bool]]:
        buffer = bytearray()
        payloads: list[bytes] = []
        left = 0  # of the current chunk's payload, still to come
        crlf = False  # the CRLF that ends a chunk's payload is next
        while True:
            while True:
                if left:
                    payloads.append(bytes(buffer[:left]))
                    taken = len(payloads[-1])
                    del buffer[:taken]
                    left -= taken
                    if left:
                        break
                    crlf = True
                if crlf:
                    if len(buffer) < 2:
                        break
                    if buffer[:2] != b"\r\n":
                        raise UpstreamError("malformed chunk from the sandbox agent: longer than its size")
                    del buffer[:2]
                    crlf = False
                if (line_end := buffer.find(b"\r\n")) < 0:
                    if len(buffer) > MAX_CHUNK_LINE:
                        raise UpstreamError("malformed chunk from the sandbox agent: no size line")
                    break
                try:
                    size = int(bytes(buffer[:line_end]).split(b";", 1)[0], 16)
                except ValueError as exc:
                    raise UpstreamError(f"malformed chunk from the sandbox agent: {bytes(buffer[:40])!r}") from exc
                if size == 0:
                    # The last chunk, then trailers (if any) up to an empty line.
                    if buffer.startswith(b"\r\n", line_end + 2):
                        end = line_end + 4
                    elif (end := buffer.find(b"\r\n\r\n", line_end) + 4) < 4:
                        if len(buffer) > MAX_HEAD:
                            raise UpstreamError("malformed trailers from the sandbox agent")
                        break
                    if len(buffer) > end:  # bytes the agent sent past its answer: this connection is spent
                        self.keep_alive = False
                    yield b"".join(payloads), False
                    return
                del buffer[:line_end + 2]
                left = size
            # What arrived goes on now, a chunk larger than one read in parts: nothing waits for the rest.
            if payloads:
                yield b"".join(payloads), True
                payloads = []
            data = await reader.read(READ_SIZE)
            if not data:
                raise UpstreamError("the agent closed the connection mid-body")
            buffer += data

    def release(self) -> None:
        """Give the connection back for reuse if the exchange completed, else drop it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self.keep_alive:
            self._pool.give_back(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection (the agent sees the client go away)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class AgentUpstream:
    """Connections to one sandbox agent."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._idle: list[Connection] = []

    async def _connect(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            fresh = time.monotonic() - conn.idle_since < IDLE_SECONDS
            if fresh and not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_HEAD)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the sandbox agent: {exc}") from exc
        return Connection(reader, writer)

    def give_back(self, conn: Connection) -> None:
        if len(self._idle) < MAX_IDLE and not conn.writer.is_closing():
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def close_idle(self) -> None:
        """Forget pooled connections (after the agent restarted, say)."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def request(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                      body: AsyncIterator[bytes] | bytes, content_length: int | None,
                      host: bytes = b"sandbox") -> UpstreamResponse:
        """Send a request; `body` is streamed with chunked framing unless `content_length` is given."""
        conn = await self._connect()
        try:
            head = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), b"host: " + host + b"\r\n"]
            head += [name + b": " + value + b"\r\n" for name, value in headers]
            head.append(b"transfer-encoding: chunked\r\n\r\n" if content_length is None
                        else b"content-length: %d\r\n\r\n" % content_length)
            conn.writer.write(b"".join(head))
            if isinstance(body, bytes):
                conn.writer.write(body)
            else:
                async for chunk in body:
                    if content_length is None:
                        conn.writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    else:
                        conn.writer.write(chunk)
                    await conn.writer.drain()
                if content_length is None:
                    conn.writer.write(b"0\r\n\r\n")
            await conn.writer.drain()
            return await self._read_head(conn, method)
        except BaseException:
            conn.close()
            raise

    async def _read_head(self, conn: Connection, method: str) -> UpstreamResponse:
        try:
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            raise UpstreamError(f"the sandbox agent did not answer: {exc}") from exc
        lines = raw[:-4].split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise UpstreamError(f"malformed answer from the sandbox agent: {lines[0]!r}") from exc
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            headers.append((name, value))
        head_only = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        response = UpstreamResponse(self, conn, status, headers, None if chunked else length, chunked, head_only)
        response.keep_alive = not lines[0].startswith(b"HTTP/1.0") and (b"connection", b"close") not in [
            (name, value.lower()) for name, value in headers]
        return response

    async def aclose(self) -> None:
        """Close every idle connection."""
        self.close_idle()
        await asyncio.sleep(0)


def drop(response: UpstreamResponse | None) -> None:
    """Close a response's connection if there is one (for error paths)."""
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()
