"""Control-plane routes for pause, resume (connect), snapshots, forks and network updates."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from e2b_local.control import pausing, snapshots, wire
from e2b_local.control.api import MAX_PAGE, _int_field, _json, _manager, page_of
from e2b_local.control.errors import ApiError


def _bool_field(data: dict[str, object], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be a boolean")
    return value


async def pause(request: Request) -> Response:
    data = await _json(request)
    await pausing.pause(_manager(request), request.path_params["sandbox_id"],
                        keep_memory=_bool_field(data, "memory", True),
                        strict=_bool_field(data, "requireHealthyGuest", False))
    return Response(status_code=204)


async def connect(request: Request) -> Response:
    """Resume a paused sandbox (201), or extend a running one's deadline (200).

    Serves v2 and v1 connect and the deprecated resume route; `memory: false` boots fresh on the files.
    """
    data = await _json(request)
    manager = _manager(request)
    sandbox_id = request.path_params["sandbox_id"]
    resumed = await pausing.resume(manager, sandbox_id, timeout=_int_field(data, "timeout", None),
                                   memory=_bool_field(data, "memory", True))
    return JSONResponse(wire.sandbox(manager.get(sandbox_id)), status_code=201 if resumed else 200)


async def create_snapshot(request: Request) -> Response:
    data = await _json(request)
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "'name' must be a string")
    _bool_field(data, "memory", True)  # accepted; local snapshots keep files only
    snapshot = await snapshots.take_snapshot(_manager(request), request.path_params["sandbox_id"], name)
    return JSONResponse(wire.snapshot(snapshot), status_code=201)


async def list_snapshots(request: Request) -> Response:
    params = request.query_params
    found = _manager(request).snapshots.matching(params.get("name") or None, params.get("sandboxID") or None)
    found.reverse()  # newest first
    page, headers = page_of(request, found, MAX_PAGE)
    return JSONResponse([wire.snapshot(s) for s in page], headers=headers)


async def delete_snapshot(request: Request) -> Response:
    reference = request.path_params["template_id"]
    if not snapshots.delete_snapshot(_manager(request), reference):
        raise ApiError(404, f"snapshot '{reference}' not found")
    return Response(status_code=204)


async def fork(request: Request) -> Response:
    data = await _json(request)
    count = _int_field(data, "count", 1)
    assert count is not None
    results = await snapshots.fork(_manager(request), request.path_params["sandbox_id"], count,
                                   _int_field(data, "timeout", None))
    body = []
    for result in results:
        if isinstance(result, Exception):
            status = result.status if isinstance(result, ApiError) else 500
            body.append({"error": {"code": status, "message": str(result)}})
        else:
            body.append({"sandbox": wire.sandbox(result)})
    return JSONResponse(body, status_code=201)


async def update_network(request: Request) -> Response:
    data = await _json(request)
    allow = _bool_field(data, "allow_internet_access", _bool_field(data, "allowInternetAccess", True))
    settings = {k: v for k, v in data.items() if k not in ("allow_internet_access", "allowInternetAccess")}
    await _manager(request).update_network(request.path_params["sandbox_id"], settings or None, allow)
    return Response(status_code=204)


def routes() -> list[Route]:
    sid = "/sandboxes/{sandbox_id}"
    return [
        Route(sid + "/pause", pause, methods=["POST"]),
        Route("/v2" + sid + "/connect", connect, methods=["POST"]),
        Route(sid + "/connect", connect, methods=["POST"]),
        Route(sid + "/resume", connect, methods=["POST"]),
        Route(sid + "/snapshots", create_snapshot, methods=["POST"]),
        Route("/snapshots", list_snapshots, methods=["GET"]),
        # The id arrives percent-encoded as one segment but may hold '/' once decoded (`local/name:tag`).
        Route("/templates/{template_id:path}", delete_snapshot, methods=["DELETE"]),
        Route(sid + "/fork", fork, methods=["POST"]),
        Route(sid + "/network", update_network, methods=["PUT"]),
    ]
