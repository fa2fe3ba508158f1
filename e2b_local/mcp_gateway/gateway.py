"""The running gateway: MCP clients to each configured server, one Streamable HTTP MCP server in front."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from e2b_local.mcp_gateway.config import ServerSpec, tool_name

NAME = "e2b-local-mcp-gateway"
# How much of a failed step's output an error shows.
ERROR_TAIL = 2000
# Variables of the gateway's own that its servers must not see.
PRIVATE_VARIABLES = ("GATEWAY_ACCESS_TOKEN",)
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class StartError(Exception):
    """A server could not be fetched, installed or started; the message names it."""


@dataclass
class Upstream:
    """A started server: its session and its tools by their gateway names."""

    spec: ServerSpec
    session: ClientSession
    tools: dict[str, types.Tool]


def server_env(spec: ServerSpec) -> dict[str, str]:
    """The environment a server runs with: the gateway's (less its token), trust settings, then its envs."""
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_VARIABLES}
    env.setdefault("HOME", "/root")
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if os.path.isfile(CA_BUNDLE):
        # Node's own certificate list lacks the system's additions (an intercepting proxy's, say).
        env.setdefault("NODE_EXTRA_CA_CERTS", CA_BUNDLE)
    return {**env, **spec.env}


async def _step(spec: ServerSpec, what: str, argv: list[str], cwd: str | None, log: TextIO) -> None:
    """Run one preparation step, its output going to the log; StartError with its output when it fails."""
    log.write(f"{spec.key}: {what}: {' '.join(argv)}\n")
    log.flush()
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=server_env(spec), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    log.write(text)
    log.flush()
    if proc.returncode != 0:
        raise StartError(f"MCP server '{spec.key}': {what} failed (exit code {proc.returncode}):\n"
                         f"{text[-ERROR_TAIL:].strip()}")


async def prepare(spec: ServerSpec, log: TextIO) -> None:
    """Clone a custom server (unless its directory exists already, as in a template) and install it."""
    if spec.clone_url and spec.cwd and not Path(spec.cwd).is_dir():
        Path(spec.cwd).parent.mkdir(parents=True, exist_ok=True)
        await _step(spec, "git clone", ["git", "clone", "--depth", "1", spec.clone_url, spec.cwd], None, log)
    if spec.install_cmd:
        await _step(spec, "install_cmd", ["/bin/sh", "-c", spec.install_cmd], spec.cwd, log)


async def _list_all(session: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            return tools


async def start(spec: ServerSpec, stack: contextlib.AsyncExitStack, log: TextIO) -> Upstream:
    """Prepare and start one server, connect to it over stdio and list its tools."""
    await prepare(spec, log)
    params = StdioServerParameters(command=spec.command[0], args=spec.command[1:], env=server_env(spec), cwd=spec.cwd)
    log.write(f"{spec.key}: starting: {' '.join(spec.command)}\n")
    log.flush()
    try:
        read, write = await stack.enter_async_context(stdio_client(params, errlog=log))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        tools = await _list_all(session)
    except Exception as exc:
        raise StartError(f"MCP server '{spec.key}' did not start ({' '.join(spec.command)}): {exc!r}; "
                         "its output is in the gateway log") from exc
    return Upstream(spec, session, {tool_name(spec.prefix, t.name): t for t in tools})


def build_server(upstreams: list[Upstream]) -> Server[Any]:
    """The aggregating MCP server: every upstream tool under its prefixed name, calls forwarded."""
    routes: dict[str, tuple[Upstream, str]] = {}
    listed: list[types.Tool] = []
    for upstream in upstreams:
        for name, tool in upstream.tools.items():
            routes[name] = (upstream, tool.name)
            listed.append(tool.model_copy(update={"name": name}))

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        route = routes.get(params.name)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}")
        upstream, original = route
        return await upstream.session.call_tool(original, dict(params.arguments or {}))

    return Server(NAME, on_list_tools=list_tools, on_call_tool=call_tool)


def require_bearer(app: Any, token: str) -> Any:
    """An ASGI app that answers 401 to any HTTP request without `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                body = json.dumps({"error": "unauthorized: send Authorization: Bearer <token>"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


@contextlib.asynccontextmanager
async def upstreams_of(specs: list[ServerSpec], log: TextIO) -> AsyncIterator[list[Upstream]]:
    """Every configured server started, in order; all stopped on exit."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await start(spec, stack, log) for spec in specs]


async def serve(specs: list[ServerSpec], token: str, port: int, log: TextIO, ready: Callable[[], None]) -> None:
    """Start the servers, then serve the gateway on `port` until stopped; `ready` is called once listening."""
    async with upstreams_of(specs, log) as upstreams:
        app = build_server(upstreams).streamable_http_app(streamable_http_path="/mcp", host="0.0.0.0")
        server = uvicorn.Server(uvicorn.Config(require_bearer(app, token), host="0.0.0.0", port=port,
                                               log_level="warning", lifespan="on"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
                raise StartError(f"the gateway could not listen on port {port}")
            await asyncio.sleep(0.05)
        count = sum(len(u.tools) for u in upstreams)
        log.write(f"listening on port {port} with {count} tools from {len(upstreams)} servers\n")
        log.flush()
        ready()
        await serving
