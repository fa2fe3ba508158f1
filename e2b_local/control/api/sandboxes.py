"""Routes for sandboxes: create, list, get, kill, and their timeouts."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from e2b_local.control.api import params, wire
from e2b_local.control.api.context import services
from e2b_local.control.errors import ApiError, not_found
from e2b_local.control.fleet.records import SpawnOptions
from e2b_local.control.fleet.sandboxes import DEFAULT_TIMEOUT
from e2b_local.control.registry import SandboxRecord, SandboxState


async def create_sandbox(request: Request) -> Response:
    data = await params.json_body(request)
    template = data.get("templateID") or "base"
    if not isinstance(template, str):
        raise ApiError(400, "'templateID' must be a string")
    allow = data.get("allow_internet_access", data.get("allowInternetAccess"))
    volumes = services(request).volumes
    mounts = volumes.mounts(data.get("volumeMounts")) if volumes is not None else ()
    options = SpawnOptions(
        timeout=params.int_field(data, "timeout", None),
        metadata=params.metadata(data),
        env_vars=params.str_map(data, "envVars"),
        allow_internet_access=allow if isinstance(allow, bool) else None,
        network=data.get("network") if isinstance(data.get("network"), dict) else None,
        lifecycle=params.lifecycle(data),
        auto_pause_memory=data.get("autoPauseMemory") is not False,
        volume_mounts=mounts,
    )
    record = await services(request).snapshots.create(template, options)
    return JSONResponse(wire.sandbox(record, services(request).fleet.domain), status_code=201)


def _expired(record: SandboxRecord, now: float) -> bool:
    """Past its end and to be killed: gone for the caller, whether or not the expiry loop got to it yet."""
    return record.running and record.end_at <= now and not (record.lifecycle and record.lifecycle.pauses)


def _filtered(request: Request, default_states: set[SandboxState]) -> list[SandboxRecord]:
    now = time.time()
    query = request.query_params
    metadata = params.metadata_filter(query.get("metadata") or query.get("query"))
    states = params.states(query.get("state"), default_states)
    template = query.get("template")
    started_after = params.parse_time(query["startedAfter"]) if query.get("startedAfter") else None
    records = [
        r for r in services(request).fleet.list()
        if r.state in states and not _expired(r, now)
        and all(r.metadata.get(k) == v for k, v in metadata.items())
        and (template is None or template in (r.template_id, r.alias))
        and (started_after is None or r.started_at >= started_after)
    ]
    records.sort(key=lambda r: (r.started_at, r.sandbox_id), reverse=query.get("order", "desc") != "asc")
    return records


async def list_sandboxes_v2(request: Request) -> Response:
    records = _filtered(request, {SandboxState.RUNNING, SandboxState.PAUSED})
    page, headers = params.page_of(request, records)
    headers["X-Total-Running"] = str(sum(r.running for r in records))
    return JSONResponse([wire.listed(r) for r in page], headers=headers)


async def list_sandboxes_v1(request: Request) -> Response:
    return JSONResponse([wire.listed(r) for r in _filtered(request, {SandboxState.RUNNING})])


async def get_sandbox(request: Request) -> Response:
    return JSONResponse(wire.detail(services(request).fleet.get(request.path_params["sandbox_id"]),
                                    services(request).fleet.domain))


async def kill_sandbox(request: Request) -> Response:
    sandbox_id = request.path_params["sandbox_id"]
    fleet = services(request).fleet
    record = fleet.records.get(sandbox_id)
    # Past its end it is already gone for the caller (list() no longer shows it): killed, and not found.
    expired = record is not None and _expired(record, time.time())
    await fleet.kill(sandbox_id)
    if expired:
        raise not_found(sandbox_id)
    return Response(status_code=204)


async def set_timeout(request: Request) -> Response:
    data = await params.json_body(request)
    timeout = params.int_field(data, "timeout", None)
    if timeout is None:
        raise ApiError(400, "'timeout' is required")
    services(request).lifecycle.set_timeout(request.path_params["sandbox_id"], timeout)
    return Response(status_code=204)


async def refresh(request: Request) -> Response:
    data = await params.json_body(request)
    duration = params.int_field(data, "duration", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT
    services(request).lifecycle.extend_timeout(request.path_params["sandbox_id"], duration)
    return Response(status_code=204)


def routes() -> list[Route]:
    sid = "/sandboxes/{sandbox_id}"
    return [
        Route("/v2/sandboxes", create_sandbox, methods=["POST"]),
        Route("/sandboxes", create_sandbox, methods=["POST"]),
        Route("/v2/sandboxes", list_sandboxes_v2, methods=["GET"]),
        Route("/sandboxes", list_sandboxes_v1, methods=["GET"]),
        Route(sid, get_sandbox, methods=["GET"]),
        Route(sid, kill_sandbox, methods=["DELETE"]),
        Route(sid + "/timeout", set_timeout, methods=["POST"]),
        Route(sid + "/refreshes", refresh, methods=["POST"]),
    ]
