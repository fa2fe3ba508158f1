"""HTTP/1.1 to sandbox ports on the HTTPS listener, relayed without the ASGI layer.

A request to `https://<port>-<id>.<domain>` over HTTP/1.1 is what a browser or an HTTP client sends to
a server in the sandbox, the hot path of a sandbox URL. Each head is checked as the ASGI path
(`ports.HostRouter`) checks it (the sandbox's traffic token, its masked host, auto-resume, no
credentials passed on), then the request and its answer are copied between the client and a
keep-alive connection into the sandbox's namespace, their framing (a length, or chunks) passed on as
it came. A WebSocket upgrade the sandbox accepts becomes a byte tunnel.

A connection whose first request is for anything else (the API, the agent's ports, a head this module
does not take) goes to the ASGI application, bytes read so far included; a later request for another
host on the same connection is answered 421 (Misdirected Request), as for HTTP/2.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Container
from dataclasses import dataclass, field

from e2b_local.control import auth
from e2b_local.control.domain import hosts
from e2b_local.control.domain.buffered import Closed, TooLong
from e2b_local.control.domain.http1 import (
    Framing,
    MalformedAnswer,
    Request,
    framing_of,
    parse_request,
    parse_response,
    response_head,
)
from e2b_local.control.domain.inbound import ConnectionState, Flight, Inbound, Key, PortPeer
from e2b_local.control.domain.ports import (
    TRAFFIC_TOKEN_HEADER,
    HostRouter,
    ProxyError,
    broken_off,
    closed_port,
    forbidden_message,
    sandbox_not_found,
    until_one_ends,
)
from e2b_local.control.fleet.upstream import IDLE_SECONDS, MAX_HEAD, MAX_IDLE, READ_SIZE, UpstreamError
from e2b_local.control.registry import SandboxRecord
from e2b_local.isolation.netns import socket_in
from e2b_local.protocol import AGENT_PORTS

# As on the plain port: idle connections outlive the SDK's own pool (300 s).
KEEP_ALIVE_SECONDS = 330
# Answers up to this size, whole in the buffer, are sent on from the callback that received them.
CALLBACK_BODY = 64 * 1024
# Request headers that are this hop's business (the framing ones, content-length and
# transfer-encoding, go on as they are: so does the body), and the credentials the sandbox never sees.
REQUEST_DROPPED = frozenset({b"connection", b"keep-alive", b"te", b"upgrade", b"host", b"proxy-connection",
                             b"trailer", b"expect"}) | auth.CREDENTIAL_HEADERS
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
REASONS = {400: b"Bad Request", 403: b"Forbidden", 421: b"Misdirected Request",
           431: b"Request Header Fields Too Large", 502: b"Bad Gateway"}


def _answer(status: int, body: bytes, content_type: bytes) -> bytes:
    """One of the relay's own answers, after which the connection closes."""
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, REASONS[status], content_type, len(body), body))


def _proxy_error(error: ProxyError, request: Request) -> bytes:
    accept = request.get(b"accept") or b""
    body, content_type = error.render(b"text/html" in accept)
    return _answer(502, body, content_type)


def _json_error(status: int, message: str) -> bytes:
    return _answer(status, json.dumps({"code": status, "message": message}, separators=(",", ":")).encode(),
                   b"application/json")


@dataclass
class PeerPool:
    """Idle keep-alive connections into sandboxes' namespaces, per sandbox port."""

    idle: dict[Key, list[tuple[float, PortPeer]]] = field(default_factory=dict)

    def take(self, key: Key) -> PortPeer | None:
        """An idle connection still open, if there is one."""
        idle = self.idle.get(key)
        now = time.monotonic()
        while idle:
            since, peer = idle.pop()
            if not peer.eof and not peer.closing and not peer.buffer and now - since < IDLE_SECONDS:
                return peer
            peer.close()
        return None

    async def connect(self, key: Key) -> PortPeer:
        """A new connection (ConnectionRefusedError when nothing listens)."""
        _, port, pidfd = key
        # The sandbox's first process changed (a resume, a restart): its old connections are gone.
        for stale in [k for k in self.idle if k[:2] == key[:2] and k != key]:
            for _, peer in self.idle.pop(stale):
                peer.close()
        loop = asyncio.get_running_loop()
        sock = socket_in(pidfd)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            _, peer = await loop.create_connection(PortPeer, sock=sock)
        except BaseException:
            sock.close()
            raise
        return peer

    def give_back(self, key: Key, peer: PortPeer) -> None:
        """Keep a connection whose exchange completed for the next request."""
        peer.on_data = peer.on_lost = None
        idle = self.idle.setdefault(key, [])
        if peer.eof or peer.closing or peer.buffer or len(idle) >= MAX_IDLE:
            peer.close()
            return
        idle.append((time.monotonic(), peer))

    def forget(self, live: Container[str]) -> None:
        """Close the idle connections of sandboxes no longer running."""
        for key in [k for k in self.idle if k[0] not in live]:
            for _, peer in self.idle.pop(key):
                peer.close()


def _upstream_head(request: Request, host: bytes) -> bytes:
    head = [request.method, b" ", request.target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in request.headers:
        if name not in REQUEST_DROPPED:
            head += [name, b": ", value, b"\r\n"]
    if request.upgrade is not None:
        head += [b"connection: upgrade\r\nupgrade: ", request.upgrade, b"\r\n"]
    head.append(b"\r\n")
    return b"".join(head)


def _masked_host(record: SandboxRecord, request: Request, port: int) -> bytes:
    mask = (record.network or {}).get("maskRequestHost")
    return str(mask).replace("${PORT}", str(port)).encode() if mask else request.host


def _token_refusal(record: SandboxRecord, request: Request) -> bytes | None:
    """The 403 for a request without the traffic token a sandbox that allows no public traffic needs."""
    if (record.network or {}).get("allowPublicTraffic") is not False:
        return None
    presented = request.get(TRAFFIC_TOKEN_HEADER)
    if presented is not None and secrets.compare_digest(presented, record.traffic_access_token.encode()):
        return None
    return _json_error(403, forbidden_message(presented is None))


class Http1Relay:
    """Serves HTTP/1.1 connections whose requests name a sandbox port, with `HostRouter`'s checks.

    A connection's requests go through its coroutine (`serve`); once it waits for the next head, a
    request without a body whose sandbox runs and has an idle connection into it is sent on from the
    callback that received it, and a small whole answer passed back from the one that received that:
    the common exchange of a keep-alive client costs no task switch. What those callbacks cannot
    finish goes back to the coroutine.
    """

    def __init__(self, router: HostRouter, domain: str) -> None:
        self.router = router
        self.domain = domain
        self.pool = PeerPool()

    def _target(self, state: ConnectionState, request: Request) -> hosts.SandboxHost | None:
        if request.host != state.host:
            target = hosts.parse(request.host, self.domain)
            state.host, state.target = request.host, (None if target is None or target.port in AGENT_PORTS
                                                      else target)
        return state.target

    async def serve(self, client: Inbound) -> None:
        """Serve the connection's requests until it closes (or hand it to the ASGI application)."""
        state = client.state
        client.on_data = lambda: self._callback_request(client)
        try:
            while True:
                try:
                    raw = await client.read_head(MAX_HEAD, KEEP_ALIVE_SECONDS)
                except TooLong:
                    if not state.relaying:
                        client.hand_over()
                        return
                    client.write(_json_error(431, "request head too large"))
                    break
                if state.handoff is not None:  # a request the callbacks sent on, its answer left to us
                    flight, state.handoff = state.handoff, None
                    if client.lost:
                        flight.peer.close()
                        break
                    if not await self._respond(client, flight):
                        break
                    continue
                if raw is None:
                    break
                request = parse_request(raw)
                target = self._target(state, request) if request is not None else None
                if target is None or request is None:
                    if not state.relaying:
                        client.unread(raw)
                        client.hand_over()
                        return
                    if request is None:
                        client.write(_json_error(400, "malformed request"))
                    else:
                        client.write(_json_error(421, "this connection serves another host"))
                    break
                state.relaying = True
                if not await self._exchange(client, request, target):
                    break
        except Closed:
            pass
        finally:
            client.on_data = None
            for flight in (state.inflight, state.handoff):
                if flight is not None:
                    flight.peer.close()
        client.close()

    # -- the callbacks' path -------------------------------------------------------------------------
    def _callback_request(self, client: Inbound) -> bool:
        """Send on the request at the head of the buffer if the callbacks can; whether the coroutine may sleep on."""
        state = client.state
        if not state.parked or not state.relaying or state.inflight is not None or state.handoff is not None:
            return state.inflight is not None and not client.eof
        buffer = client.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return len(buffer) <= MAX_HEAD and not client.eof
        if client.eof or client.writing_paused:
            return False
        request = parse_request(bytes(buffer[:end + 4]))
        if (request is None or request.length or request.chunked or request.upgrade is not None
                or request.expects_continue):
            return False
        target = self._target(state, request)
        if target is None:
            return False
        router = self.router
        record = router.fleet.records.get(target.sandbox_id)
        live = router.fleet.live.get(target.sandbox_id)
        top = live.container.top if live is not None else None
        if record is None or not record.running or top is None or _token_refusal(record, request) is not None:
            return False
        key = (target.sandbox_id, target.port, top.fd)
        peer = self.pool.take(key)
        if peer is None:
            return False
        client.consume(end + 4)
        state.inflight = Flight(request, peer, key)
        peer.on_data = lambda: self._callback_response(client)
        client.on_lost = peer.close
        peer.write(_upstream_head(request, _masked_host(record, request, target.port)))
        return True

    def _callback_response(self, client: Inbound) -> bool:
        """Pass on the answer to the request in flight if it is whole and small; else leave it to the coroutine."""
        state = client.state
        flight = state.inflight
        if flight is None:
            return False
        peer = flight.peer
        buffer = peer.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if peer.eof or len(buffer) > MAX_HEAD:
                self._hand_off(client)
            return True
        raw = bytes(buffer[:end + 4])
        try:
            status, headers = parse_response(raw)
            framing = framing_of(flight.request, raw, status, headers)
        except (MalformedAnswer, ValueError):
            self._hand_off(client)
            return True
        body = 0 if framing.no_body else framing.length
        if status < 200 or status == 101 or body is None or body > CALLBACK_BODY:
            self._hand_off(client)
            return True
        if len(buffer) < end + 4 + body:
            if peer.eof:
                self._hand_off(client)
            return True
        peer.consume(end + 4)
        client.write(response_head(raw, headers, framing.keep_alive) + (peer.consume(body) if body else b""))
        state.inflight = None
        client.on_lost = None
        if framing.upstream_keeps:
            self.pool.give_back(flight.key, peer)
        else:
            peer.on_data = None
            peer.close()
        if not framing.keep_alive:
            client.close()
            return True
        client.touch()
        if client.buffer and not self._callback_request(client):
            client.wake()  # a pipelined request the coroutine has to serve
        return True

    @staticmethod
    def _hand_off(client: Inbound) -> None:
        state = client.state
        flight, state.inflight = state.inflight, None
        if flight is not None:
            flight.peer.on_data = None
            state.handoff = flight
        client.wake()

    # -- the coroutine's path ------------------------------------------------------------------------
    async def _exchange(self, client: Inbound, request: Request, target: hosts.SandboxHost) -> bool:
        """Relay one request and its answer; whether the connection can carry another request."""
        router = self.router
        sandbox_id, port = target.sandbox_id, target.port
        record = router.fleet.records.get(sandbox_id)
        if record is None:
            client.write(_proxy_error(sandbox_not_found(sandbox_id), request))
            return False
        if (refusal := _token_refusal(record, request)) is not None:
            client.write(refusal)
            return False
        running = await router.lifecycle.upstream_for_request(sandbox_id)
        live = router.fleet.live.get(sandbox_id)
        top = live.container.top if live is not None else None
        if running is None or top is None:
            client.write(_proxy_error(sandbox_not_found(sandbox_id, router.fleet.is_paused(sandbox_id)), request))
            return False
        key = (sandbox_id, port, top.fd)
        self.pool.forget(router.fleet.live)
        head = _upstream_head(request, _masked_host(record, request, port))
        peer = self.pool.take(key) if request.upgrade is None else None
        try:
            peer = peer or await self.pool.connect(key)
        except ConnectionRefusedError:
            client.write(_proxy_error(closed_port(sandbox_id, port), request))
            return False
        except OSError as exc:
            client.write(_proxy_error(self._broken(sandbox_id, port, exc), request))
            return False
        flight = Flight(request, peer, key)
        # A client that leaves mid-answer closes the connection into the sandbox too: the service sees it go.
        client.on_lost = peer.close
        try:
            peer.write(head)
            if request.expects_continue:
                # Said here, so that the body it lets the client send is read while the head goes on.
                client.write(CONTINUE)
            if request.chunked:
                await self._copy_chunked_request(client, peer)
            else:
                await _copy_exact(client, peer, request.length)
        except Closed:
            peer.close()
            client.on_lost = None
            if client.eof:
                raise
            client.write(_proxy_error(self._broken(sandbox_id, port, UpstreamError("the service closed the "
                                                                                   "connection")), request))
            return False
        return await self._respond(client, flight)

    def _broken(self, sandbox_id: str, port: int, exc: BaseException) -> ProxyError:
        if not self.router.fleet.is_running(sandbox_id):
            return sandbox_not_found(sandbox_id)
        return broken_off(sandbox_id, port, exc)

    async def _respond(self, client: Inbound, flight: Flight) -> bool:
        """Pass the answer to the request in flight on to the client; whether the connection goes on."""
        request, peer = flight.request, flight.peer
        client.on_lost = peer.close
        answered = False
        try:
            while True:
                raw = await peer.read_until(b"\r\n\r\n", MAX_HEAD)
                if raw is None:
                    raise UpstreamError("the service closed the connection without answering")
                status, headers = parse_response(raw)
                if status == 101 and request.upgrade is not None:
                    answered = True
                    client.write(raw)
                    await _tunnel(client, peer)
                    return False
                if status >= 200 or status == 101:
                    break
                if status != 100:  # 100 was said already; other interim answers (103) go on
                    client.write(response_head(raw, headers, True))
            answered = True
            framing = framing_of(request, raw, status, headers)
            await self._copy_response(client, peer, response_head(raw, headers, framing.keep_alive), framing)
            if framing.upstream_keeps:
                self.pool.give_back(flight.key, peer)
            else:
                peer.close()
            await client.drain()
            return framing.keep_alive
        except (UpstreamError, MalformedAnswer, Closed, TooLong, ValueError) as exc:
            peer.close()
            if answered or client.lost:
                raise Closed from exc  # part of an answer was sent: only closing tells the client
            sandbox_id, port, _ = flight.key
            client.write(_proxy_error(self._broken(sandbox_id, port, exc), request))
            return False
        except BaseException:
            peer.close()
            raise
        finally:
            client.on_lost = None

    @staticmethod
    async def _copy_chunked_request(client: Inbound, peer: PortPeer) -> None:
        while True:
            line = await client.read_until(b"\r\n", MAX_HEAD)
            if line is None:
                raise Closed
            size = int(line.split(b";", 1)[0], 16)
            peer.write(line)
            if size == 0:
                while (trailer := await client.read_until(b"\r\n", MAX_HEAD)) != b"\r\n":
                    if trailer is None:
                        raise Closed
                    peer.write(trailer)
                peer.write(b"\r\n")
                await peer.drain()
                return
            await _copy_exact(client, peer, size + 2)

    @staticmethod
    async def _copy_response(client: Inbound, peer: PortPeer, out: bytes, framing: Framing) -> None:
        if framing.no_body:
            client.write(out)
        elif framing.chunked:
            while True:
                line = await peer.read_until(b"\r\n", MAX_HEAD)
                if line is None:
                    raise UpstreamError("the service closed the connection mid-body")
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    out += line
                    while (trailer := await peer.read_until(b"\r\n", MAX_HEAD)) != b"\r\n":
                        if trailer is None:
                            raise UpstreamError("the service closed the connection mid-body")
                        out += trailer
                    client.write(out + b"\r\n")
                    break
                # Each chunk goes on at once: a stream (server-sent events) reaches the client as it is written.
                client.write(out + line + await peer.read_exactly(size + 2))
                out = b""
                await client.drain()
        elif framing.length is not None:
            remaining = framing.length
            while remaining:
                data = await peer.read(min(remaining, READ_SIZE))
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
            while data := await peer.read(READ_SIZE):
                client.write(data)
                await client.drain()
        if client.lost:
            raise Closed


async def _copy_exact(client: Inbound, peer: PortPeer, length: int) -> None:
    """Copy exactly `length` bytes of the client's request body into the sandbox (Closed if it ends first)."""
    remaining = length
    while remaining:
        data = await client.read(min(remaining, READ_SIZE))
        if not data:
            raise Closed
        remaining -= len(data)
        peer.write(data)
        await peer.drain()


async def _tunnel(client: Inbound, peer: PortPeer) -> None:
    """Copy bytes both ways until either side closes (an upgraded connection: WebSocket frames)."""

    async def to_sandbox() -> None:
        while data := await client.read(READ_SIZE):
            peer.write(data)
            await peer.drain()

    async def to_client() -> None:
        while data := await peer.read(READ_SIZE):
            client.write(data)
            await client.drain()

    try:
        await until_one_ends(to_sandbox(), to_client(), quiet=(Closed, OSError))
    finally:
        peer.close()
