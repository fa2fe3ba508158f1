"""One egress proxy per server, on the host's loopback, for the TCP the firewall steers to it.

A steered connection arrives redirected (firewall.py): the kernel keeps its original destination
(SO_ORIGINAL_DST) and /proc/net/tcp names the socket's owner uid, which names the sandbox. The
proxy then dials that destination itself, with a socket made as the sandbox's owner uid, so the
host's rules for that sandbox apply to the dial exactly as to the sandbox's own connections: this
host's addresses, link-local ones and whatever the sandbox's lists deny stay out of reach. A dial
to a SOCKS5 egress proxy uses python-socks; when that proxy cannot be reached the connection is
closed (fail closed, never a direct dial).

HTTP to a host with transform rules is parsed with h11 and each request gets the rules' headers,
with secret placeholders resolved here: the values never enter the sandbox. On port 80 a rule keyed
by a domain applies only when the destination is one of that domain's addresses, so a sandbox
cannot collect a secret by naming the domain in a request to a server of its own. On port 443 the
proxy reads the ClientHello: when the name it asks for (SNI), or the destination address, has
rules, the proxy verifies the real destination under that name against the host's trust store
(and closes the connection when it fails), then terminates the sandbox's TLS with a certificate of
the egress authority (tls.py), which sandboxes trust; a domain's rule needs no address check there,
as only that domain's server passes the verification. Any other connection is relayed untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes

# python-socks encodes names with this codec while its thread has a sandbox owner's file-system
# identity, which may not be able to read the interpreter's library: loaded here, while it can.
import encodings.idna  # noqa: F401
import ipaddress
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from python_socks import ProxyType
from python_socks.sync import Proxy

from e2b_local.control.egress.tls import EgressAuthority, NotClientHello, TlsStream, read_client_hello, upstream_context
from e2b_local.isolation.firewall import DIRECT_GID, TUNNEL_GID

log = logging.getLogger("e2b_local")
SO_ORIGINAL_DST = 80
HTTP_PORT = 80
HTTPS_PORT = 443
CHUNK = 64 * 1024
DIAL_TIMEOUT = 30.0
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Route:
    """What the proxy does with one sandbox's connections."""

    owner: int
    # host (domain, IP or CIDR) -> headers to set, placeholders unresolved
    rules: dict[str, dict[str, str]] = field(default_factory=dict)
    socks: dict[str, Any] | None = None  # E2B's egressProxy: address, username, password


def rule_headers(network: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """The headers each host's rules set, merged in order (a later rule's header wins)."""
    found: dict[str, dict[str, str]] = {}
    for host, rules in ((network or {}).get("rules") or {}).items():
        merged: dict[str, str] = {}
        for rule in rules or []:
            merged.update(((rule or {}).get("transform") or {}).get("headers") or {})
        found[host.lower()] = merged
    return found


@contextlib.contextmanager
def _as_owner(owner: int, gid: int) -> Any:
    # setfsuid/setfsgid change only the calling thread's credentials: a socket created meanwhile
    # belongs to the sandbox's owner (meta skuid) and the proxy's group (meta skgid).
    _libc.setfsgid(gid)
    _libc.setfsuid(owner)
    try:
        yield
    finally:
        _libc.setfsuid(0)
        _libc.setfsgid(0)


def _socket_as(owner: int, gid: int) -> socket.socket:
    # TCP by name, so that asyncio turns Nagle off on the dial as on the sandbox's side of the relay.
    with _as_owner(owner, gid):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)


def _proc_address(address: tuple[str, int]) -> str:
    return f"{socket.inet_aton(address[0])[::-1].hex().upper()}:{address[1]:04X}"


def _peer_owner(peer: tuple[str, int], original: tuple[str, int]) -> int | None:
    """The uid of the host socket at `peer` that connected to `original` (its view, before the redirect)."""
    local, remote = _proc_address(peer), _proc_address(original)
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return int(fields[7])
    return None


def _original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, address = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(address), port


def _tunnel(route: Route, host: str, port: int) -> socket.socket:
    """A connection to (host, port) through the sandbox's SOCKS5 proxy. Blocking: run in a thread."""
    assert route.socks is not None
    address = str(route.socks["address"])
    proxy_host, _, proxy_port = address.rpartition(":")
    proxy = Proxy(ProxyType.SOCKS5, proxy_host.strip("[]"), int(proxy_port),
                  username=route.socks.get("username"), password=route.socks.get("password"), rdns=False)
    with _as_owner(route.owner, TUNNEL_GID):
        sock = proxy.connect(host, port, timeout=DIAL_TIMEOUT)
    sock.setblocking(False)
    return sock


async def _dial(route: Route, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if route.socks is not None:
        sock = await asyncio.to_thread(_tunnel, route, host, port)
    else:
        sock = _socket_as(route.owner, DIRECT_GID)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), DIAL_TIMEOUT)
        except BaseException:
            sock.close()
            raise
    return await asyncio.open_connection(sock=sock)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


def _in_network(address: str, key: str) -> bool | None:
    """Whether `address` is in the network `key` names; None when `key` is a domain."""
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(key, strict=False)
    except ValueError:
        return None


def _host_matches(key: str, host: str, address: str) -> bool:
    """Whether the rule keyed `key` applies to a plain HTTP request for `host` sent to `address`."""
    inside = _in_network(address, key)
    if inside is not None:
        return inside
    if key != host:
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(key, None, proto=socket.IPPROTO_TCP)}
    except socket.gaierror:
        return False
    return address in addresses


def http_headers(route: Route, host: str, address: str) -> dict[str, str]:
    """The headers a plain HTTP request for `host` sent to `address` gets. Blocking: resolves names."""
    merged: dict[str, str] = {}
    for key, extra in route.rules.items():
        if extra and _host_matches(key, host, address):
            merged.update(extra)
    return merged


def tls_headers(route: Route, name: str | None, address: str) -> dict[str, str]:
    """The headers requests get on a TLS connection to `address` that asks for `name` (verified upstream)."""
    merged: dict[str, str] = {}
    for key, extra in route.rules.items():
        if extra and (key == name or _in_network(address, key)):
            merged.update(extra)
    return merged


def _request_host(headers: list[tuple[bytes, bytes]]) -> str:
    host = next((v.decode("latin-1") for n, v in headers if n == b"host"), "")
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return host.strip("[]").lower()


class EgressProxy:
    """The server's egress proxy: `route(owner)` says what to do, `fill(text)` resolves placeholders."""

    def __init__(self, route: Callable[[int], Route | None], fill: Callable[[str], str | None],
                 authority: EgressAuthority | None = None) -> None:
        self.route = route
        self.fill = fill
        # Without an authority, TLS is relayed as it is, whatever the rules say.
        self.authority = authority
        self._verify: ssl.SSLContext | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.authority is not None:
            self._verify = upstream_context()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            sock = writer.get_extra_info("socket")
            host, port = _original_destination(sock)
            owner = _peer_owner(writer.get_extra_info("peername")[:2], (host, port))
            route = self.route(owner) if owner is not None else None
            if route is None:
                return  # not a steered sandbox connection: nothing to do for it
            try:
                up_reader, upstream = await _dial(route, host, port)
            except Exception as exc:  # any failure to dial closes the connection
                log.info("egress: sandbox owner %s could not reach %s:%s: %s", owner, host, port, exc)
                return
            if port == HTTP_PORT and route.rules:
                await self._http(reader, writer, up_reader, upstream,
                                 lambda request_host: http_headers(route, request_host, host))
            elif port == HTTPS_PORT and route.rules and self.authority is not None:
                await self._https(route, host, reader, writer, up_reader, upstream)
            else:
                await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (ConnectionError, OSError, h11.ProtocolError, asyncio.CancelledError, NotClientHello):
            pass
        except Exception:
            log.exception("egress proxy: a connection failed")
        finally:
            self._tasks.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    w.close()

    async def _https(self, route: Route, address: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
        """Terminate TLS to a host with rules (the destination verified first); relay anything else as it is."""
        assert self.authority is not None and self._verify is not None
        received = bytearray()
        hello = asyncio.ensure_future(read_client_hello(reader, received))
        # A protocol whose server speaks first is no TLS: its first bytes end the wait for a ClientHello.
        greeting = asyncio.ensure_future(up_reader.read(CHUNK))
        await asyncio.wait({hello, greeting}, return_when=asyncio.FIRST_COMPLETED)
        for task in (hello, greeting):
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        spoke = greeting.result() if greeting.done() and not greeting.cancelled() else b""
        name: str | None = None
        headers: dict[str, str] = {}
        if not spoke and not hello.cancelled() and hello.exception() is None:
            name = hello.result()
            headers = tls_headers(route, name, address)
        if not headers:
            upstream.write(bytes(received))
            writer.write(spoke)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
            return
        server_name = name or address
        try:
            await upstream.start_tls(self._verify, server_hostname=server_name)
        except (ssl.SSLError, OSError) as exc:
            # Never a downgrade: the sandbox's connection ends before its handshake does.
            log.info("egress: TLS to %s (%s) failed, so the sandbox's connection is closed: %s",
                     server_name, address, exc)
            return
        context = await asyncio.to_thread(self.authority.context_for, server_name)
        inbound = TlsStream(reader, writer, context, bytes(received))
        await inbound.handshake()
        try:
            await self._http(inbound, inbound, up_reader, upstream, lambda _host: headers)
        finally:
            inbound.close()

    async def _http(self, reader: asyncio.StreamReader | TlsStream, writer: asyncio.StreamWriter | TlsStream,
                    up_reader: asyncio.StreamReader, upstream: asyncio.StreamWriter,
                    headers_for: Callable[[str], dict[str, str]]) -> None:
        """Relay HTTP/1.1 requests one by one, each with the headers `headers_for(its host)` set."""
        inbound, outbound = h11.Connection(h11.SERVER), h11.Connection(h11.CLIENT)

        async def next_event(conn: h11.Connection, source: asyncio.StreamReader | TlsStream) -> Any:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await source.read(CHUNK))
                    continue
                return event

        while True:
            event = await next_event(inbound, reader)
            if not isinstance(event, h11.Request):
                return
            headers = await asyncio.to_thread(self._transform, headers_for, event.headers)
            if headers is None:
                writer.write(inbound.send(h11.Response(status_code=502, headers=[("content-length", "0"),
                                                                                  ("connection", "close")])))
                writer.write(inbound.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                return
            upstream.write(outbound.send(h11.Request(method=event.method, target=event.target, headers=headers)))
            while not isinstance(event := await next_event(inbound, reader), h11.EndOfMessage):
                upstream.write(outbound.send(event) or b"")
            upstream.write(outbound.send(event) or b"")
            await upstream.drain()
            while True:
                answer = await next_event(outbound, up_reader)
                if isinstance(answer, h11.ConnectionClosed):
                    return
                if isinstance(answer, (h11.Response, h11.InformationalResponse)):
                    # h11 speaks HTTP/1.1 only: an HTTP/1.0 server's answer is passed on as 1.1.
                    answer = type(answer)(status_code=answer.status_code, headers=answer.headers,
                                          reason=answer.reason)
                writer.write(inbound.send(answer) or b"")
                await writer.drain()
                if isinstance(answer, h11.EndOfMessage):
                    break
            if inbound.our_state is h11.MUST_CLOSE or outbound.our_state is h11.MUST_CLOSE:
                return
            try:
                inbound.start_next_cycle()
                outbound.start_next_cycle()
            except h11.LocalProtocolError:
                return

    def _transform(self, headers_for: Callable[[str], dict[str, str]],
                   headers: Any) -> list[tuple[bytes, bytes]] | None:
        """The request's headers with its host's rules applied; None when a placeholder names no secret."""
        current = [(name, value) for name, value in headers]
        for name, value in headers_for(_request_host(current)).items():
            filled = self.fill(value)
            if filled is None:
                return None
            lowered = name.lower().encode("latin-1")
            current = [(n, v) for n, v in current if n != lowered]
            current.append((lowered, filled.encode("latin-1")))
        return current
