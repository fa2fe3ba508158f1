"""Control-plane routes for pause, resume (connect), snapshots, forks and network updates."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from e2b_local.control.api import wire
from e2b_local.control.api.context import services
from e2b_local.control.api.params import bool_field, int_field, json_body, page_of
from e2b_local.control.errors import ApiError


async def pause(request: Request) -> Response:
    data = await json_body(request)
    await services(request).lifecycle.pause(request.path_params["sandbox_id"],
                                            keep_memory=bool_field(data, "memory", True),
                                            strict=bool_field(data, "requireHealthyGuest", False))
    return Response(status_code=204)


async def connect(request: Request) -> Response:
    """Resume a paused sandbox (201), or extend a running one's deadline (200).

    Serves v2 and v1 connect and the deprecated resume route; `memory: false` boots fresh on the files.
    """
    data = await json_body(request)
    found = services(request)
    sandbox_id = request.path_params["sandbox_id"]
    resumed = await found.lifecycle.resume(sandbox_id, timeout=int_field(data, "timeout", None),
                                           memory=bool_field(data, "memory", True))
    return JSONResponse(wire.sandbox(found.fleet.get(sandbox_id), found.fleet.domain),
                        status_code=201 if resumed else 200)


async def create_snapshot(request: Request) -> Response:
    data = await json_body(request)
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "'name' must be a string")
    bool_field(data, "memory", True)  # accepted; local snapshots keep files only
    snapshot = await services(request).snapshots.take(request.path_params["sandbox_id"], name)
    return JSONResponse(wire.snapshot(snapshot), status_code=201)


async def list_snapshots(request: Request) -> Response:
    params = request.query_params
    found = services(request).snapshots.store.matching(params.get("name") or None, params.get("sandboxID") or None)
    found.reverse()  # newest first
    page, headers = page_of(request, found)
    return JSONResponse([wire.snapshot(s) for s in page], headers=headers)


async def delete_snapshot(request: Request) -> Response:
    reference = request.path_params["template_id"]
    if not services(request).snapshots.delete(reference):
        raise ApiError(404, f"snapshot '{reference}' not found")
    return Response(status_code=204)


async def fork(request: Request) -> Response:
    data = await json_body(request)
    count = int_field(data, "count", 1)
    assert count is not None
    results = await services(request).snapshots.fork(request.path_params["sandbox_id"], count,
                                                     int_field(data, "timeout", None))
    body = []
    for result in results:
        if isinstance(result, Exception):
            status = result.status if isinstance(result, ApiError) else 500
            body.append({"error": {"code": status, "message": str(result)}})
        else:
            body.append({"sandbox": wire.sandbox(result, services(request).fleet.domain)})
    return JSONResponse(body, status_code=201)


async def update_network(request: Request) -> Response:
    data = await json_body(request)
    allow = bool_field(data, "allow_internet_access", bool_field(data, "allowInternetAccess", True))
    settings = {k: v for k, v in data.items() if k not in ("allow_internet_access", "allowInternetAccess")}
    await services(request).fleet.update_network(request.path_params["sandbox_id"], settings or None, allow)
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
