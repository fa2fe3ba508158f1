"""The e2b-local server: one port, routed per request to the control plane or to a sandbox."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from e2b_local.config import Paths
from e2b_local.control import api, templates
from e2b_local.control.errors import ApiError, CatchAll, error_response
from e2b_local.control.router import forward, respond_json
from e2b_local.control.sandboxes import SandboxManager
from e2b_local.isolation.container import become_subreaper

log = logging.getLogger("e2b_local")
# Control-plane paths that answer without the API key (the CLI's readiness probe).
OPEN_PATHS = ("/health",)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = error_response(exc.status, exc.message, exc.error_code)
    if exc.status == 413:
        # The rest of the body is not read: closing the connection is what stops the client sending it.
        response.headers["connection"] = "close"
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


class Server:
    """The ASGI application of e2b-local."""

    def __init__(self, paths: Paths, api_key: str) -> None:
        self.api_key = api_key
        paths.secure()
        self.manager = SandboxManager(paths)
        self.api = Starlette(
            # Templates first: snapshots are deleted through /templates/{id} too, which the template routes pass on.
            routes=[*templates.routes(), *api.routes()],
            exception_handlers={ApiError: _api_error, HTTPException: _http_error},
            # Inside Starlette's last-resort handler, which would close the connection after answering.
            middleware=[Middleware(CatchAll, data_dir=paths.home)],
            lifespan=self._lifespan,
        )
        self.api.state.manager = self.manager
        self.api.state.templates = templates.TemplateService(self.manager)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        become_subreaper()
        await self.manager.start()
        try:
            yield
        finally:
            await self.manager.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        headers = dict(scope["headers"])
        sandbox_id = headers.get(b"e2b-sandbox-id")
        if sandbox_id is not None:
            await forward(self.manager, self.api_key, sandbox_id.decode("latin-1"), scope, receive, send)
            return
        if scope["path"] not in OPEN_PATHS and not scope["path"].startswith(templates.OPEN_PREFIXES):
            key = headers.get(b"x-api-key", b"").decode("latin-1")
            if not secrets.compare_digest(key, self.api_key):
                await respond_json(send, 401, {"code": 401, "message": "Invalid API key"})
                return
        await self.api(scope, receive, send)
