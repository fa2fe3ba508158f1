"""Routes for resource samples, and the health probe."""

from __future__ import annotations

import os
import time
from importlib import metadata

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from e2b_local.control.api import params
from e2b_local.control.api.context import services
from e2b_local.protocol import TEMPLATES

# When this process started serving, for the health probe's uptime.
STARTED = time.time()


async def sandbox_metrics(request: Request) -> Response:
    series = services(request).fleet.metrics(request.path_params["sandbox_id"])
    samples = series.between(params.timestamp(request, "start"), params.timestamp(request, "end"))
    return JSONResponse([s.to_wire() for s in samples])


async def many_metrics(request: Request) -> Response:
    fleet = services(request).fleet
    ids = [i for i in (request.query_params.get("sandbox_ids") or "").split(",") if i]
    out = {}
    for sandbox_id in ids:
        if sandbox_id in fleet.records and fleet.metrics(sandbox_id).samples:
            out[sandbox_id] = fleet.metrics(sandbox_id).samples[-1].to_wire()
    return JSONResponse({"sandboxes": out})


def _version() -> str:
    try:
        return metadata.version("e2b-local")
    except metadata.PackageNotFoundError:
        return "unknown"


async def health(request: Request) -> Response:
    """Who answers: the CLI checks the pid and data directory to tell its own server from another."""
    now = time.time()
    return JSONResponse({"status": "ok", "time": now, "version": _version(), "pid": os.getpid(),
                         "home": str(request.app.state.data_dir), "templates": list(TEMPLATES),
                         "uptime": round(now - STARTED, 3)})


def routes() -> list[Route]:
    return [
        Route("/health", health, methods=["GET"]),
        # Before the sandbox routes, whose `{sandbox_id}` would take "metrics".
        Route("/sandboxes/metrics", many_metrics, methods=["GET"]),
        Route("/sandboxes/{sandbox_id}/metrics", sandbox_metrics, methods=["GET"]),
    ]
