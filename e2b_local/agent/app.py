"""The agent's ASGI application: routes a request to envd's services or to the code interpreter.

The host forwards every sandbox request here once it has authenticated it (the agent holds no token
and checks none), so the `E2b-Sandbox-Port` header still says which in-sandbox service it was meant
for: 49999 is the code interpreter, anything else is envd. `/init` comes only from the control plane,
which the host's router never lets a client reach.
"""

from __future__ import annotations

import socket
from typing import Any

from e2b.envd.process.process_connect import ProcessASGIApplication
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from e2b_local.agent.connect import CODECS, EnvelopeCheck
from e2b_local.agent.process import ProcessService
from e2b_local.agent.state import STATE

CODE_INTERPRETER_PORT = b"49999"

process_service = ProcessService()


async def health(request: Request) -> Response:
    return Response(status_code=204)


async def init(request: Request) -> Response:
    """Apply the sandbox's settings (E2B's orchestrator sends the same on boot and resume)."""
    body: dict[str, Any] = await request.json()
    if "envVars" in body:
        STATE.env_vars = dict(body["envVars"] or {})
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
    """Dispatches by sandbox port and RPC path."""

    def __init__(self) -> None:
        self.envd_http = Starlette(routes=_envd_routes())
        self.process_rpc = EnvelopeCheck(ProcessASGIApplication(process_service, codecs=CODECS))
        filesystem_rpc = _filesystem_app()
        self.filesystem_rpc = EnvelopeCheck(filesystem_rpc) if filesystem_rpc is not None else None
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
        if path.startswith("/process.Process/"):
            await self.process_rpc(scope, receive, send)
        elif path.startswith("/filesystem.Filesystem/") and self.filesystem_rpc is not None:
            await self.filesystem_rpc(scope, receive, send)
        else:
            await self.envd_http(scope, receive, send)

