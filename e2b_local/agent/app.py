"""The agent's ASGI application: routes a request to envd's services or to the code interpreter.

The host forwards every sandbox request here unchanged, so the `E2b-Sandbox-Port` header still says
which in-sandbox service it was meant for: 49999 is the code interpreter, anything else is envd.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from e2b.envd.process.process_connect import ProcessASGIApplication
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from e2b_local.agent.process import ProcessService
from e2b_local.agent.state import STATE

CODE_INTERPRETER_PORT = b"49999"
# Routes that answer without the access token, as envd's do (/files checks a signature instead). Matched
# exactly: a prefix match on "/files" would also open every /filesystem.Filesystem/ RPC.
OPEN_PATHS = ("/health", "/files")

process_service = ProcessService()


async def health(request: Request) -> Response:
    return Response(status_code=204)


async def init(request: Request) -> Response:
    """Apply the sandbox's settings (E2B's orchestrator sends the same on boot and resume)."""
    if not STATE.check_token(request.headers.get("x-access-token")):
        return JSONResponse({"code": 401, "message": "invalid access token"}, status_code=401)
    body: dict[str, Any] = await request.json()
    if "envVars" in body:
        STATE.env_vars = dict(body["envVars"] or {})
    if body.get("accessToken"):
        STATE.access_token = body["accessToken"]
    for key, attr in (("sandboxId", "sandbox_id"), ("templateId", "template_id"),
                      ("defaultUser", "default_user"), ("defaultWorkdir", "default_workdir")):
        if body.get(key):
            setattr(STATE, attr, body[key])
    if body.get("hostname"):
        socket.sethostname(body["hostname"])
    return Response(status_code=204)


async def envs(request: Request) -> Response:
    return JSONResponse(STATE.sandbox_env())


def _envd_routes() -> list[Route]:
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/init", init, methods=["POST"]),
        Route("/envs", envs, methods=["GET"]),
    ]
    try:
        from e2b_local.agent.files import routes as file_routes
    except ImportError:
        return routes
    return routes + file_routes()


def _filesystem_app() -> ASGIApp | None:
    try:
        from e2b_local.agent.filesystem import filesystem_app
    except ImportError:
        return None
    return filesystem_app()


class AgentApp:
    """Dispatches by sandbox port and RPC path, and enforces the access token."""

    def __init__(self) -> None:
        self.envd_http = Starlette(routes=_envd_routes())
        self.process_rpc = ProcessASGIApplication(process_service)
        self.filesystem_rpc = _filesystem_app()
        self.interpreter: ASGIApp | None = None

    def prestart(self) -> None:
        """In a code-interpreter sandbox, start the Python kernel before the first request needs it."""
        from e2b_local.interpreter.app import create_app, ships_kernels

        if ships_kernels():
            app = create_app()
            self.interpreter = app
            app.prestart()

    def _interpreter(self) -> ASGIApp:
        if self.interpreter is None:
            from e2b_local.interpreter.app import create_app

            self.interpreter = create_app()
        return self.interpreter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.envd_http(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path: str = scope.get("path", "")
        if headers.get(b"e2b-sandbox-port") == CODE_INTERPRETER_PORT:
            await self._interpreter()(scope, receive, send)
            return
        if path not in OPEN_PATHS and not STATE.check_token(_header(headers, b"x-access-token")):
            await _unauthorized(path, send)
            return
        if path.startswith("/process.Process/"):
            await self.process_rpc(scope, receive, send)
        elif path.startswith("/filesystem.Filesystem/") and self.filesystem_rpc is not None:
            await self.filesystem_rpc(scope, receive, send)
        else:
            await self.envd_http(scope, receive, send)


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


async def _unauthorized(path: str, send: Send) -> None:
    rpc = path.startswith(("/process.Process/", "/filesystem.Filesystem/"))
    # Connect clients expect a string code; envd's HTTP routes answer with a numeric one.
    body = {"code": "unauthenticated" if rpc else 401, "message": "invalid access token"}
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
