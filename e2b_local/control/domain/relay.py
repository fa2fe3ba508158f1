"""HTTP/1.1 to sandbox ports on the HTTPS listener, relayed without the ASGI layer.

A request to `https://<port>-<id>.<domain>` over HTTP/1.1 is what a browser or an HTTP client sends to
a server in the sandbox, the hot path of a sandbox URL. Such connections are served here, request by
request: each head is checked as the ASGI path (`ports.HostRouter`) checks it (the sandbox's traffic
token, its masked host, auto-resume, no credentials passed on), then the request and its answer are
copied between the client and a keep-alive connection into the sandbox's namespace, their framing
(a length, or chunks) passed on as it came. A WebSocket upgrade the sandbox accepts becomes a byte
tunnel.

A connection whose first request is for anything else (the API, the agent's ports, a head this module
does not take) goes to the ASGI application, bytes read so far included; a later request for another
host on the same connection is answered 421 (Misdirected Request), as for HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from e2b_local.control import auth
from e2b_local.control.domain import hosts
from e2b_local.control.domain.ports import (
    TRAFFIC_TOKEN_HEADER,
    HostRouter,
    ProxyError,
    broken_off,
    closed_port,
    forbidden_message,
    sandbox_not_found,
)
from e2b_local.control.fleet.upstream import MAX_HEAD, READ_SIZE, Connection, UpstreamError
from e2b_local.protocol import AGENT_PORTS

# As on the plain port: idle connections outlive the SDK's own pool (300 s).
KEEP_ALIVE_SECONDS = 330
# Request headers that are this hop's business (the framing ones, content-length and
# transfer-encoding, go on as they are: so does the body), and the credentials the sandbox never sees.
REQUEST_DROPPED = frozenset({b"connection", b"keep-alive", b"te", b"upgrade", b"host", b"proxy-connection",
                             b"trailer", b"expect"}) | auth.CREDENTIAL_HEADERS
RESPONSE_DROPPED = frozenset({b"connection", b"keep-alive", b"te", b"upgrade", b"proxy-connection", b"trailer"})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
REASONS = {400: b"Bad Request", 403: b"Forbidden", 421: b"Misdirected Request",
           431: b"Request Header Fields Too Large", 502: b"Bad Gateway"}


class ClientGone(Exception):
    """The client closed its connection."""


class HeadTooLong(Exception):
    """A request head longer than the relay takes."""


class Client(Protocol):
    """The client's side of one connection (the HTTPS listener's `Inbound`)."""

    lost: bool
    on_lost: Callable[[], None] | None

    async def read_until(self, separator: bytes, limit: int, idle: float | None = None) -> bytes | None: ...
    async def read(self, size: int) -> bytes: ...
    def unread(self, data: bytes) -> None: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...
    def hand_over(self) -> None: ...


@dataclass
class Request:
    """One request head, parsed."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    host: bytes
    length: int
    chunked: bool
    upgrade: bytes | None
    expects_continue: bool
    keep_alive: bool

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _split_headers(lines: list[bytes]) -> list[tuple[bytes, bytes]] | None:
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        # No name, whitespace before the colon, or a folded line: not a head to pass on.
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            return None
        headers.append((name.lower(), value.strip(b" \t")))
    return headers


def parse_request(raw: bytes) -> Request | None:
    """The request in `raw` (a head ending in an empty line), or None when it is not one to relay."""
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].startswith(b"/"):
        return None
    headers = _split_headers(lines[1:])
    if headers is None:
        return None
    values: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        values.setdefault(name, []).append(value)
    hosts_seen = values.get(b"host", [])
    lengths = set(values.get(b"content-length", []))
    codings = values.get(b"transfer-encoding", [])
    # One host; a body framed one way only (a length and chunks together is how requests are smuggled).
    if len(hosts_seen) != 1 or len(lengths) > 1 or (codings and lengths):
        return None
    if codings and (len(codings) != 1 or codings[0].lower() != b"chunked"):
        return None
    length = lengths.pop() if lengths else b"0"
    if not length.isdigit():
        return None
    connection = {token.strip() for value in values.get(b"connection", []) for token in value.lower().split(b",")}
    upgrade = values.get(b"upgrade", [None])[0]
    websocket = upgrade is not None and b"upgrade" in connection and upgrade.lower() == b"websocket"
    keep_alive = b"close" not in connection and (parts[2] == b"HTTP/1.1" or b"keep-alive" in connection)
    return Request(parts[0], parts[1], parts[2], headers, hosts_seen[0], int(length), bool(codings),
                   upgrade if websocket else None,
                   any(v.lower() == b"100-continue" for v in values.get(b"expect", [])), keep_alive)


def _answer(status: int, body: bytes, content_type: bytes) -> bytes:
    """One of the relay's own answers, after which the connection closes."""
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, REASONS[status], content_type, len(body), body))


def _proxy_error(error: ProxyError, request: Request) -> bytes:
    accept = request.get(b"accept") or b""
    body, content_type = error.render(b"text/html" in accept)
    return _answer(502, body, content_type)


def _json_error(status: int, message: str) -> bytes:
    from json import dumps

    return _answer(status, dumps({"code": status, "message": message}, separators=(",", ":")).encode(),
                   b"application/json")


class Http1Relay:
    """Serves HTTP/1.1 connections whose requests name a sandbox port, through `HostRouter`'s checks and pools."""

    def __init__(self, router: HostRouter, domain: str) -> None:
        self.router = router
        self.domain = domain

    def _target(self, request: Request | None) -> hosts.SandboxHost | None:
        if request is None:
            return None
        target = hosts.parse(request.host, self.domain)
        if target is None or target.port in AGENT_PORTS:
            return None
        return target

    async def serve(self, client: Client) -> None:
        """Serve the connection's requests until it closes (or hand it to the ASGI application)."""
        first = True
        try:
            while True:
                try:
                    raw = await client.read_until(b"\r\n\r\n", MAX_HEAD, idle=KEEP_ALIVE_SECONDS)
                except HeadTooLong:
                    if first:
                        client.hand_over()
                        return
                    client.write(_json_error(431, "request head too large"))
                    break
                if raw is None:
                    break
                request = parse_request(raw)
                target = self._target(request)
                if target is None or request is None:
                    if first:
                        client.unread(raw)
                        client.hand_over()
                        return
                    if request is None:
                        client.write(_json_error(400, "malformed request"))
                    else:
                        client.write(_json_error(421, "this connection serves another host"))
                    break
                first = False
                if not await self._exchange(client, request, target):
                    break
        except (ClientGone, ConnectionError):
            pass
        client.close()

    async def _exchange(self, client: Client, request: Request, target: hosts.SandboxHost) -> bool:
        """Relay one request and its answer; whether the connection can carry another request."""
        router = self.router
        sandbox_id, port = target.sandbox_id, target.port
        record = router.fleet.records.get(sandbox_id)
        if record is None:
            client.write(_proxy_error(sandbox_not_found(sandbox_id), request))
            return False
        network = record.network or {}
        if network.get("allowPublicTraffic") is False:
            presented = request.get(TRAFFIC_TOKEN_HEADER)
            if presented is None or not secrets.compare_digest(presented, record.traffic_access_token.encode()):
                client.write(_json_error(403, forbidden_message(presented is None)))
                return False
        running = await router.lifecycle.upstream_for_request(sandbox_id)
        live = router.fleet.live.get(sandbox_id)
        top = live.container.top if live is not None else None
        if running is None or top is None:
            client.write(_proxy_error(sandbox_not_found(sandbox_id, router.fleet.is_paused(sandbox_id)), request))
            return False
        pool = router.pool(sandbox_id, port, top.fd)
        host = request.host
        if mask := network.get("maskRequestHost"):
            host = str(mask).replace("${PORT}", str(port)).encode()
        head = [request.method, b" ", request.target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
        for name, value in request.headers:
            if name not in REQUEST_DROPPED:
                head += [name, b": ", value, b"\r\n"]
        if request.upgrade is not None:
            head += [b"connection: upgrade\r\nupgrade: ", request.upgrade, b"\r\n"]
        head.append(b"\r\n")
        try:
            upstream = await (pool.open() if request.upgrade is not None else pool.connection())
        except ConnectionRefusedError:
            client.write(_proxy_error(closed_port(sandbox_id, port), request))
            return False
        except (UpstreamError, OSError) as exc:
            client.write(_proxy_error(self._broken(sandbox_id, port, exc), request))
            return False
        # A client that leaves mid-answer closes the connection into the sandbox too: the service sees it go.
        client.on_lost = upstream.close
        try:
            return await self._relay(client, request, upstream, b"".join(head), sandbox_id, port, pool.give_back)
        finally:
            client.on_lost = None

    def _broken(self, sandbox_id: str, port: int, exc: BaseException) -> ProxyError:
        if not self.router.fleet.is_running(sandbox_id):
            return sandbox_not_found(sandbox_id)
        return broken_off(sandbox_id, port, exc)

    async def _relay(self, client: Client, request: Request, upstream: Connection, head: bytes, sandbox_id: str,
                     port: int, give_back: Callable[[Connection], None]) -> bool:
        reader, writer = upstream.reader, upstream.writer
        answered = False
        try:
            writer.write(head)
            if request.expects_continue:
                # Said here, so that the body it lets the client send is read while the head goes on.
                client.write(CONTINUE)
            if request.chunked:
                await self._copy_chunked_request(client, writer)
            else:
                remaining = request.length
                while remaining:
                    data = await client.read(min(remaining, READ_SIZE))
                    if not data:
                        raise ClientGone
                    remaining -= len(data)
                    writer.write(data)
                    await writer.drain()
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                status, response_headers = _parse_response(raw)
                if status == 101 and request.upgrade is not None:
                    answered = True
                    client.write(raw)
                    await _tunnel(client, upstream)
                    return False
                if status >= 200 or status == 101:
                    break
                if status != 100:  # 100 was said already; other interim answers (103) go on
                    client.write(_response_head(raw, response_headers, True))
            answered = True
            return await self._copy_response(client, request, upstream, raw, status, response_headers, give_back)
        except ClientGone:
            upstream.close()
            raise
        except (UpstreamError, OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            upstream.close()
            if answered or client.lost:
                raise ClientGone from exc  # part of an answer was sent: only closing tells the client
            if isinstance(exc, asyncio.IncompleteReadError) and not exc.partial:
                exc = UpstreamError("the service closed the connection without answering")
            client.write(_proxy_error(self._broken(sandbox_id, port, exc), request))
            return False
        except BaseException:
            upstream.close()
            raise

    @staticmethod
    async def _copy_chunked_request(client: Client, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await client.read_until(b"\r\n", MAX_HEAD)
            if line is None:
                raise ClientGone
            size = int(line.split(b";", 1)[0], 16)
            writer.write(line)
            if size == 0:
                while (trailer := await client.read_until(b"\r\n", MAX_HEAD)) != b"\r\n":
                    if trailer is None:
                        raise ClientGone
                    writer.write(trailer)
                writer.write(b"\r\n")
                await writer.drain()
                return
            remaining = size + 2
            while remaining:
                data = await client.read(min(remaining, READ_SIZE))
                if not data:
                    raise ClientGone
                remaining -= len(data)
                writer.write(data)
                await writer.drain()

    @staticmethod
    async def _copy_response(client: Client, request: Request, upstream: Connection, raw: bytes, status: int,
                             headers: list[tuple[bytes, bytes]], give_back: Callable[[Connection], None]) -> bool:
        reader = upstream.reader
        values = dict(headers)
        coding = values.get(b"transfer-encoding", b"").lower()
        chunked = coding.endswith(b"chunked")
        length_value = values.get(b"content-length")
        no_body = request.method == b"HEAD" or status in (204, 304)
        length = int(length_value) if length_value is not None and not coding and not no_body else None
        until_close = not no_body and not chunked and length is None
        upstream_keeps = (raw.startswith(b"HTTP/1.1") and not until_close
                          and b"close" not in values.get(b"connection", b"").lower())
        keep_alive = request.keep_alive and not until_close
        out = _response_head(raw, headers, keep_alive)
        if no_body:
            client.write(out)
        elif chunked:
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    out += line
                    while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                        out += trailer
                    client.write(out + b"\r\n")
                    break
                # Each chunk goes on at once: a stream (server-sent events) reaches the client as it is written.
                client.write(out + line + await reader.readexactly(size + 2))
                out = b""
                await client.drain()
        elif length is not None:
            remaining = length
            while remaining:
                data = await reader.read(min(remaining, READ_SIZE))
                if not data:
                    raise UpstreamError("the service closed the connection mid-body")
                remaining -= len(data)
                client.write(out + data)
                out = b""
                await client.drain()
            if out:
                client.write(out)
        else:
            client.write(out)
            while data := await reader.read(READ_SIZE):
                client.write(data)
                await client.drain()
        if client.lost:
            raise ClientGone
        if upstream_keeps:
            give_back(upstream)
        else:
            upstream.close()
        await client.drain()
        return keep_alive


def _parse_response(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise UpstreamError(f"malformed answer from the service: {lines[0][:80]!r}")
    headers = _split_headers(lines[1:])
    if headers is None:
        raise UpstreamError("malformed headers from the service")
    return int(parts[1]), headers


def _response_head(raw: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    status_line = raw[:raw.index(b"\r\n")]
    out = [b"HTTP/1.1", status_line[status_line.index(b" "):], b"\r\n"]
    for name, value in headers:
        if name not in RESPONSE_DROPPED:
            out += [name, b": ", value, b"\r\n"]
    if not keep_alive:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


async def _tunnel(client: Client, upstream: Connection) -> None:
    """Copy bytes both ways until either side closes (an upgraded connection: WebSocket frames)."""

    async def to_sandbox() -> None:
        while data := await client.read(READ_SIZE):
            upstream.writer.write(data)
            await upstream.writer.drain()

    async def to_client() -> None:
        while data := await upstream.reader.read(READ_SIZE):
            client.write(data)
            await client.drain()

    tasks = [asyncio.create_task(to_sandbox()), asyncio.create_task(to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError, ClientGone):
                await task
        upstream.close()
