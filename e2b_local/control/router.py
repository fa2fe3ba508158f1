"""Forwards sandbox-addressed requests (`E2b-Sandbox-Id` header) to that sandbox's agent.

Each request is authenticated first (see `auth`), and its credentials are not passed on. Bodies
stream both ways as they are produced (Connect streams and NDJSON need each message flushed), and a
client that hangs up closes the upstream connection too, so the agent sees the disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from starlette.types import Receive, Scope, Send

from e2b_local.control import auth
from e2b_local.control.errors import error_response, json_response
from e2b_local.control.fleet.sandboxes import Fleet
from e2b_local.control.fleet.upstream import AgentUpstream, UpstreamError, UpstreamResponse, drop
from e2b_local.control.lifecycle import SandboxLifecycle
from e2b_local.protocol import AGENT_PORTS

# The in-sandbox ports the SDK addresses (E2b-Sandbox-Port), as the header spells them.
PORT_HEADERS = tuple(str(port).encode() for port in AGENT_PORTS)
# Hop-by-hop headers are the proxy's own business on each side.
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"host",
              b"proxy-connection", b"trailer"}

# Methods whose requests carry no body unless they declare one.
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


class ClientGone(Exception):
    """The client disconnected while we were reading its request."""


# A server that can reset the stream of one answer puts a coroutine function doing so in the scope's
# extensions under this name (domain mode's HTTPS listener does, see `domain.listener`).
RESET_EXTENSION = "e2b_local.reset_stream"


def abort_transport(transport: asyncio.BaseTransport) -> None:
    """Close a client's connection with a reset (RST), not an orderly close."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def reset_client(scope: Scope, send: Send) -> None:
    """Reset the client's stream, as E2B's proxy resets a stream whose sandbox went away mid-answer.

    The SDK takes a reset (unlike a connection closed mid-body, or an HTTP/2 stream never ended) for a
    transport failure, probes the sandbox and reports it killed. ASGI has no way to say this: the
    server's own reset is used when it offers one, else uvicorn's transport is reset.
    """
    reset = (scope.get("extensions") or {}).get(RESET_EXTENSION)
    if reset is not None:
        await reset()
        return
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if isinstance(transport, asyncio.Transport):
        abort_transport(transport)


class Router:
    """Forwards sandbox-addressed requests to the fleet's agents, resuming a paused sandbox on traffic."""

    def __init__(self, fleet: Fleet, lifecycle: SandboxLifecycle, api_key: str) -> None:
        self.fleet = fleet
        self.lifecycle = lifecycle
        self.api_key = api_key

    async def forward(self, sandbox_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Proxy one request to the sandbox's agent, if it carries a credential that opens that sandbox."""
        fleet = self.fleet
        headers = dict(scope["headers"])
        record = fleet.records.get(sandbox_id)
        if record is not None:
            # Checked before anything else happens (an automatic resume, say) on the caller's behalf.
            refusal = auth.check(record, self.api_key, scope["method"], scope["path"], scope["query_string"], headers)
            if refusal is not None:
                await json_response(refusal.status, auth.refusal_body(refusal, scope["path"]))(scope, receive, send)
                return
        upstream = await self.lifecycle.upstream_for_request(sandbox_id) if record is not None else None
        if upstream is None:
            # "was not found" is what the SDK looks for to raise SandboxNotRunningException, whose text
            # says the sandbox was killed, paused or timed out; ours says which.
            message = f"The sandbox {sandbox_id} was not found"
            if fleet.is_paused(sandbox_id):
                message += " running: it is paused (resume it with Sandbox.connect)"
            await _refuse(scope, receive, send, message)
            return
        if headers.get(b"e2b-sandbox-port") not in PORT_HEADERS:
            await _refuse(scope, receive, send, "The sandbox is running but port is not open")
            return
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope["query_string"]
        target = path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        upstream_headers = [(k, v) for k, v in scope["headers"]
                            if k not in HOP_BY_HOP and k not in auth.CREDENTIAL_HEADERS and k != b"content-length"]
        try:
            await relay(upstream, scope, receive, send, target, upstream_headers)
        except (UpstreamError, OSError, ValueError) as exc:
            if fleet.is_running(sandbox_id):
                # The agent is there but broke off this request: the SDK raises SandboxUnreachableException
                # for this message, not the "not found" that means the sandbox is gone.
                detail = str(exc) or type(exc).__name__
                message = f"The sandbox {sandbox_id} is running but its agent broke off the request ({detail})"
            else:
                message = f"The sandbox {sandbox_id} was not found"
            await _refuse(scope, receive, send, message)


def _body_length(scope: Scope) -> int | None:
    """The request body's length as the client declared it; None when it streams (sent on chunked).

    A request without a body must not be sent on with chunked framing: a server that reads no body
    for a GET would take the empty chunk for its next request.
    """
    headers = dict(scope["headers"])
    if (length := headers.get(b"content-length")) is not None:
        return int(length)
    if b"transfer-encoding" in headers:
        return None
    if scope.get("http_version", "1.1").startswith("1") or scope["method"] in BODYLESS_METHODS:
        return 0
    return None  # HTTP/2 without a declared length: the body ends with its stream


async def relay(upstream: AgentUpstream, scope: Scope, receive: Receive, send: Send, target: str,
                headers: list[tuple[bytes, bytes]], host: bytes = b"sandbox") -> None:
    """Send the request of `scope` to `upstream` and stream its answer back.

    Raises `UpstreamError` (or `OSError`, `ValueError`) when no answer came, before anything was sent
    to the client; a client that leaves is not an error.
    """
    body_done = asyncio.Event()

    async def request_body():
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                break
        body_done.set()

    response: UpstreamResponse | None = None
    try:
        response = await upstream.request(scope["method"], target, headers, request_body(),
                                          _body_length(scope), host=host)
    except ClientGone:
        return
    except BaseException:
        drop(response)
        raise
    try:
        await send({"type": "http.response.start", "status": response.status, "headers": [
            (k, v) for k, v in response.headers if k not in HOP_BY_HOP
        ]})

        async def pump() -> None:
            async for piece, more in response.pieces():
                if piece or not more:
                    await send({"type": "http.response.body", "body": piece, "more_body": more})
            response.release()

        if not response.streaming:  # a bounded body: no need to watch for the client leaving
            await pump()
            return

        async def client_gone() -> None:
            await body_done.wait()
            while (await receive())["type"] != "http.disconnect":
                pass

        pumping = asyncio.create_task(pump())
        watching = asyncio.create_task(client_gone())
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
        for task in (pumping, watching):
            task.cancel()
        upstream_broke = False
        for task in (pumping, watching):
            try:
                await task
            except (UpstreamError, OSError, asyncio.IncompleteReadError):
                upstream_broke = True
            except asyncio.CancelledError:
                pass
        if upstream_broke:
            await reset_client(scope, send)
    finally:
        # Whatever was not handed back complete is closed, so the agent sees the client go.
        drop(response)


async def _refuse(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    """The proxy's own 502, in the SDK's error shape; whether to retry is left to the SDK."""
    await error_response(502, message, final=False)(scope, receive, send)
