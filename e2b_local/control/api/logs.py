"""Routes for a sandbox's logs: `GET /sandboxes/{id}/logs` (SandboxLogs) and its v2 (SandboxLogsV2Response)."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from e2b_local.control.api import params
from e2b_local.control.api.context import services
from e2b_local.control.errors import ApiError, not_found
from e2b_local.control.services.events import rfc3339
from e2b_local.control.services.sandbox_logs import LEVELS, LogEntry

# The page size: E2B's default, which is also the largest.
MAX_LIMIT = 1000


async def _entries(request: Request, since_ms: int | None, forward: bool = True, level: str | None = None,
                   search: str | None = None) -> list[LogEntry]:
    sandbox_id = request.path_params["sandbox_id"]
    fleet = services(request).fleet
    record = fleet.records.get(sandbox_id)
    live = fleet.live.get(sandbox_id)
    if record is not None and record.running and live is not None:
        await fleet.logs.collect(sandbox_id, live.client)
    elif record is None and not fleet.logs.has_any(sandbox_id):
        raise not_found(sandbox_id)
    limit = min(params.query_int(request, "limit", MAX_LIMIT) or 0, MAX_LIMIT)
    since = since_ms / 1000 if since_ms is not None else None
    return fleet.logs.entries(sandbox_id, since, limit, forward, level, search)


def _entry(entry: LogEntry) -> dict[str, object]:
    return {"timestamp": rfc3339(entry.timestamp), "message": entry.message, "level": entry.level,
            "fields": {"logger": entry.logger, **entry.fields}}


async def logs_v1(request: Request) -> Response:
    """Each entry twice: as a log line (the JSON `e2b sandbox logs` prints) and as a structured entry."""
    entries = await _entries(request, params.query_int(request, "start", None))
    lines = [{"timestamp": rfc3339(e.timestamp),
              "line": json.dumps({**e.fields, "level": e.level, "logger": e.logger, "message": e.message})}
             for e in entries]
    return JSONResponse({"logs": lines, "logEntries": [_entry(e) for e in entries]})


async def logs_v2(request: Request) -> Response:
    """`cursor` (ms), `limit`, `direction` (forward, backward), `level` (and above), `search` (in the message)."""
    query = request.query_params
    direction = query.get("direction") or "forward"
    if direction not in ("forward", "backward"):
        raise ApiError(400, "'direction' must be forward or backward")
    level = query.get("level") or None
    if level is not None and level not in LEVELS:
        raise ApiError(400, f"'level' must be one of {', '.join(LEVELS)}")
    entries = await _entries(request, params.query_int(request, "cursor", None), direction == "forward", level,
                             query.get("search") or None)
    return JSONResponse({"logs": [_entry(e) for e in entries]})


def routes() -> list[Route]:
    return [
        Route("/sandboxes/{sandbox_id}/logs", logs_v1, methods=["GET"]),
        Route("/v2/sandboxes/{sandbox_id}/logs", logs_v2, methods=["GET"]),
    ]
