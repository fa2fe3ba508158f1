"""Host routing: `https://<port>-<id>.<domain>` reaches that port inside that sandbox.

The agent's own ports (envd, the code interpreter) go through the router, as header-routed requests
do. Any other port is reached by a TCP connection made in the sandbox's network namespace from
outside (see `isolation.netns`), to the sandbox's loopback: the sandbox sees a local client, and
gains no way to reach the host. HTTP requests are relayed like the router's (streamed both ways,
keep-alive per sandbox port); WebSocket sessions are relayed message by message.

Answers when the request cannot be served follow E2B's proxy: 502 with a JSON error, or an HTML
page for a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from e2b_local.control import auth
from e2b_local.control.domain.hosts import SandboxHost
from e2b_local.control.fleet.sandboxes import Fleet
from e2b_local.control.fleet.upstream import MAX_HEAD, AgentUpstream, Connection, UpstreamError
from e2b_local.control.lifecycle import SandboxLifecycle
from e2b_local.control.router import HOP_BY_HOP, Router, relay
from e2b_local.isolation.netns import socket_in
from e2b_local.protocol import AGENT_PORTS

log = logging.getLogger("e2b_local")
TRAFFIC_TOKEN_HEADER = b"e2b-traffic-access-token"
# Headers the WebSocket client makes itself for the upstream handshake.
WEBSOCKET_OWN = HOP_BY_HOP | {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
                              b"sec-websocket-protocol", b"content-length"}


async def until_one_ends(*pumps: Coroutine[Any, Any, None], quiet: tuple[type[BaseException], ...]) -> None:
    """Run `pumps` (the two directions of a relayed connection) until one ends, then stop the other.

    What the stopped pumps raise on the way out is ignored when it is one of `quiet`.
    """
    tasks = [asyncio.create_task(pump) for pump in pumps]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, *quiet):
                await task



class PortUpstream(AgentUpstream):
    """Keep-alive connections to one TCP port on a sandbox's loopback."""

    def __init__(self, pidfd: int, port: int) -> None:
        super().__init__(f"port {port}")
        self.pidfd = pidfd
        self.port = port

    async def open(self) -> Connection:
        """A new connection (ConnectionRefusedError when nothing listens)."""
        sock = socket_in(self.pidfd)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEAD)
        return Connection(reader, writer)

    async def connection(self) -> Connection:
        """An idle connection if one is still open, else a new one (ConnectionRefusedError when nothing listens)."""
        return await self._connect()

    async def _connect(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        try:
            return await self.open()
        except ConnectionRefusedError:
            raise
        except OSError as exc:
            raise UpstreamError(f"cannot connect to port {self.port}: {exc}") from exc


def _wants_html(scope: Scope) -> bool:
    accept = dict(scope["headers"]).get(b"accept", b"")
    return b"text/html" in accept


@dataclass(frozen=True)
class ProxyError:
    """One of the proxy's own 502 answers: a title (for a browser's page), a message, and the JSON's fields."""

    title: str
    message: str
    fields: dict[str, Any]

    def render(self, wants_html: bool) -> tuple[bytes, bytes]:
        """The body and its content type: an HTML page for a browser, else E2B's JSON error."""
        if wants_html:
            page = (f"<!doctype html><html><head><title>{html.escape(self.title)}</title></head>"
                    f"<body><h1>{html.escape(self.title)}</h1><p>{html.escape(self.message)}</p></body></html>")
            return page.encode(), b"text/html; charset=utf-8"
        body = {"code": 502, "message": self.message, **self.fields}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(), b"application/json"


def sandbox_not_found(sandbox_id: str, paused: bool = False) -> ProxyError:
    """E2B's answer for a sandbox that does not exist (or no longer runs)."""
    message = f"The sandbox {sandbox_id} was not found"
    if paused:
        message += " running: it is paused (resume it with Sandbox.connect)"
    return ProxyError("Sandbox Not Found", message, {"sandboxId": sandbox_id})


def closed_port(sandbox_id: str, port: int) -> ProxyError:
    """E2B's answer when the sandbox runs but nothing listens on the port."""
    message = f"The sandbox {sandbox_id} is running but there is no service running on port {port}"
    return ProxyError("Closed Port Error", message, {"sandboxId": sandbox_id, "port": port})


def broken_off(sandbox_id: str, port: int, exc: BaseException) -> ProxyError:
    """The answer when the service on the port broke off the request before answering."""
    message = f"The sandbox {sandbox_id} is running but the service on port {port} broke off the request"
    return ProxyError("Bad Gateway", f"{message} ({exc or type(exc).__name__})",
                      {"sandboxId": sandbox_id, "port": port})


def forbidden_message(missing: bool) -> str:
    """Why a sandbox that does not allow public traffic refused a request."""
    return ("the sandbox does not allow public traffic: send its traffic access token in the "
            "e2b-traffic-access-token header") if missing else "invalid traffic access token"


async def _answer(scope: Scope, receive: Receive, send: Send, error: ProxyError) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1011, "reason": error.message[:120]})
        return
    body, content_type = error.render(_wants_html(scope))
    await Response(body, status_code=502, media_type=content_type.decode())(scope, receive, send)


async def not_found(scope: Scope, receive: Receive, send: Send, sandbox_id: str, paused: bool = False) -> None:
    """E2B's answer for a sandbox that does not exist (or no longer runs)."""
    await _answer(scope, receive, send, sandbox_not_found(sandbox_id, paused))


async def port_closed(scope: Scope, receive: Receive, send: Send, sandbox_id: str, port: int) -> None:
    """E2B's answer when the sandbox runs but nothing listens on the port."""
    await _answer(scope, receive, send, closed_port(sandbox_id, port))


class HostRouter:
    """Serves requests addressed by host to a sandbox port."""

    def __init__(self, fleet: Fleet, lifecycle: SandboxLifecycle, router: Router) -> None:
        self.fleet = fleet
        self.lifecycle = lifecycle
        self.router = router
        self._pools: dict[tuple[str, int], PortUpstream] = {}

    async def __call__(self, target: SandboxHost, scope: Scope, receive: Receive, send: Send) -> None:
        sandbox_id, port = target.sandbox_id, target.port
        if port in AGENT_PORTS and scope["type"] == "http":
            # The SDK's own traffic in domain mode: the same service and checks as header routing.
            scope = dict(scope)
            routing = (b"e2b-sandbox-id", b"e2b-sandbox-port")
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in routing]
            scope["headers"] += [(b"e2b-sandbox-id", sandbox_id.encode()), (b"e2b-sandbox-port", str(port).encode())]
            await self.router.forward(sandbox_id, scope, receive, send)
            return
        record = self.fleet.records.get(sandbox_id)
        if record is None:
            await not_found(scope, receive, send, sandbox_id)
            return
        network = record.network or {}
        headers = dict(scope["headers"])
        if network.get("allowPublicTraffic") is False:
            presented = headers.get(TRAFFIC_TOKEN_HEADER)
            if presented is None or not secrets.compare_digest(presented, record.traffic_access_token.encode()):
                await self._forbidden(scope, receive, send, presented is None)
                return
        upstream = await self.lifecycle.upstream_for_request(sandbox_id)
        live = self.fleet.live.get(sandbox_id)
        top = live.container.top if live is not None else None
        if upstream is None or top is None:
            await not_found(scope, receive, send, sandbox_id, self.fleet.is_paused(sandbox_id))
            return
        pool = self.pool(sandbox_id, port, top.fd)
        host = headers.get(b"host", b"")
        if mask := network.get("maskRequestHost"):
            host = str(mask).replace("${PORT}", str(port)).encode()
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope["query_string"].decode("latin-1")
        target_path = path + ("?" + query if query else "")
        forwarded = [(k, v) for k, v in scope["headers"]
                     if k not in HOP_BY_HOP and k not in auth.CREDENTIAL_HEADERS and k != b"content-length"]
        if scope["type"] == "websocket":
            await self._websocket(pool, scope, receive, send, target_path, forwarded, host, sandbox_id)
            return
        try:
            await relay(pool, scope, receive, send, target_path, forwarded, host=host)
        except ConnectionRefusedError:
            await port_closed(scope, receive, send, sandbox_id, port)
        except (UpstreamError, OSError, ValueError) as exc:
            if not self.fleet.is_running(sandbox_id):
                await not_found(scope, receive, send, sandbox_id)
                return
            await _answer(scope, receive, send, broken_off(sandbox_id, port, exc))

    def pool(self, sandbox_id: str, port: int, pidfd: int) -> PortUpstream:
        """The keep-alive connections to a port of the sandbox whose first process `pidfd` refers to."""
        pool = self._pools.get((sandbox_id, port))
        if pool is None or pool.pidfd != pidfd:
            if pool is not None:
                pool.close_idle()
            for key in [k for k in self._pools if k[0] not in self.fleet.live]:
                self._pools.pop(key).close_idle()
            pool = self._pools[(sandbox_id, port)] = PortUpstream(pidfd, port)
        return pool

    @staticmethod
    async def _forbidden(scope: Scope, receive: Receive, send: Send, missing: bool) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})
            return
        await JSONResponse({"code": 403, "message": forbidden_message(missing)}, status_code=403)(scope, receive, send)

    async def _websocket(self, pool: PortUpstream, scope: Scope, receive: Receive, send: Send, target: str,
                         headers: list[tuple[bytes, bytes]], host: bytes, sandbox_id: str) -> None:
        from websockets.asyncio.client import ClientConnection, connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        if (await receive())["type"] != "websocket.connect":
            return
        try:
            conn = await pool.open()
        except ConnectionRefusedError:
            await port_closed(scope, receive, send, sandbox_id, pool.port)
            return
        sock = conn.writer.get_extra_info("socket").dup()
        conn.close()
        extra = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in WEBSOCKET_OWN]
        extra.append(("Host", host.decode("latin-1")))
        try:
            upstream: ClientConnection = await connect(
                f"ws://{host.decode('latin-1') or 'sandbox'}{target}", sock=sock, additional_headers=extra,
                subprotocols=scope.get("subprotocols") or None, compression=None, max_size=None,
                open_timeout=30, ping_interval=None, user_agent_header=None)
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            sock.close()
            await send({"type": "websocket.close", "code": 1011, "reason": str(exc)[:120]})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

        async def to_sandbox() -> None:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    await upstream.close()
                    return
                await upstream.send(message["text"] if message.get("text") is not None else message["bytes"])

        async def to_client() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for data in upstream:
                    key = "text" if isinstance(data, str) else "bytes"
                    await send({"type": "websocket.send", key: data})
            code = upstream.close_code or 1000
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code if code != 1005 else 1000})

        try:
            await until_one_ends(to_sandbox(), to_client(), quiet=(ConnectionClosed, OSError))
        finally:
            await upstream.close()
