"""The control-plane application: every route, and errors answered in the SDK's shape."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from e2b_local.control.api import events, logs, metrics, persistence, sandboxes, secrets, templates, volumes
from e2b_local.control.api.context import Services
from e2b_local.control.errors import ApiError, CatchAll, error_response


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


def routes() -> list[Route]:
    """Every control-plane route (the fixed paths before those with a sandbox id in the same place)."""
    return [*templates.routes(), *persistence.routes(), *metrics.routes(), *events.routes(), *logs.routes(),
            *sandboxes.routes(), *volumes.routes(), *secrets.routes()]


def build(services: Services, data_dir: Path,
          lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]]) -> Starlette:
    """The control-plane application over `services`; `data_dir` is named when its disk is full."""
    app = Starlette(
        routes=routes(),
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        # Inside Starlette's last-resort handler, which would close the connection after answering.
        middleware=[Middleware(CatchAll, data_dir=data_dir)],
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.data_dir = data_dir
    return app
