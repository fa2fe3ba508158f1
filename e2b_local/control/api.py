"""E2B's control-plane REST API (`/v2/sandboxes`, `/sandboxes/{id}/...`), v2 and the older v1 routes."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from e2b_local.control import wire
from e2b_local.control.errors import ApiError
from e2b_local.control.registry import SandboxRecord
from e2b_local.control.sandboxes import DEFAULT_TIMEOUT, SandboxManager

# The API's page size limit for list.
MAX_PAGE = 100
# Control-plane bodies are small JSON objects (create with its metadata and env vars is the largest):
# 1 MiB is far beyond real use, and what the server reads of a body before it refuses it.
MAX_JSON_BODY = 1024 * 1024
# Metadata is for labels and filters, not storage: limits on each key and value (in UTF-8 bytes).
MAX_METADATA_KEY = 256
MAX_METADATA_VALUE = 16 * 1024
T = TypeVar("T")


def _manager(request: Request) -> SandboxManager:
    return request.app.state.manager


def _too_large() -> ApiError:
    return ApiError(413, f"request body too large: control-plane requests are limited to {MAX_JSON_BODY} bytes")


async def _body(request: Request) -> bytes:
    """The request body, read no further than MAX_JSON_BODY (413 past it)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_JSON_BODY:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BODY:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> dict[str, Any]:
    body = await _body(request)
    if not body:
        return {}
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _int_field(data: dict[str, Any], name: str, default: int | None) -> int | None:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer")
    return value


def _str_map(data: dict[str, Any], name: str) -> dict[str, str]:
    value = data.get(name) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ApiError(400, f"'{name}' must be an object of strings")
    return value


def _metadata(data: dict[str, Any]) -> dict[str, str]:
    metadata = _str_map(data, "metadata")
    for key, value in metadata.items():
        if len(key.encode()) > MAX_METADATA_KEY:
            raise ApiError(400, f"'metadata' keys must be at most {MAX_METADATA_KEY} bytes long")
        if len(value.encode()) > MAX_METADATA_VALUE:
            raise ApiError(400, f"'metadata' value of '{key[:64]}' is longer than {MAX_METADATA_VALUE} bytes")
    return metadata


def _optional_bool(value: object, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ApiError(400, f"'{name}' must be a boolean")


def _lifecycle(data: dict[str, Any]) -> dict[str, Any] | None:
    """The `lifecycle` object get_info reports, from create's autoPause / autoResume fields."""
    auto_pause = _optional_bool(data.get("autoPause"), "autoPause")
    _optional_bool(data.get("autoPauseMemory"), "autoPauseMemory")
    auto_resume = data.get("autoResume")
    if isinstance(auto_resume, dict):
        resume = _optional_bool(auto_resume.get("enabled"), "autoResume.enabled")
    else:
        # The SDK sends {"enabled": ...}; a bare boolean is accepted as the same.
        resume = _optional_bool(auto_resume, "autoResume")
    if "autoPause" not in data and "autoResume" not in data:
        return None
    lifecycle = {"onTimeout": "pause" if auto_pause else "kill", "autoResume": bool(resume)}
    if lifecycle["autoResume"] and lifecycle["onTimeout"] != "pause":
        raise ApiError(400, "autoResume needs autoPause: only a paused sandbox can be resumed")
    if lifecycle["autoResume"] and data.get("autoPauseMemory") is False:
        raise ApiError(400, "autoResume cannot be combined with a filesystem-only auto-pause (autoPauseMemory: false)")
    return lifecycle


async def create_sandbox(request: Request) -> Response:
    data = await _json(request)
    template = data.get("templateID") or "base"
    if not isinstance(template, str):
        raise ApiError(400, "'templateID' must be a string")
    allow = data.get("allow_internet_access", data.get("allowInternetAccess"))
    record = await _manager(request).create(
        template=template,
        timeout=_int_field(data, "timeout", None),
        metadata=_metadata(data),
        env_vars=_str_map(data, "envVars"),
        allow_internet_access=allow if isinstance(allow, bool) else None,
        network=data.get("network") if isinstance(data.get("network"), dict) else None,
        lifecycle=_lifecycle(data),
        auto_pause_memory=data.get("autoPauseMemory") is not False,
    )
    return JSONResponse(wire.sandbox(record), status_code=201)


def _metadata_filter(raw: str | None) -> dict[str, str]:
    # The SDK quotes keys and values, joins them as a query string, and the HTTP layer quotes that
    # again: Starlette undid the outer layer, parse_qsl the second, unquote the SDK's own.
    if not raw:
        return {}
    return {unquote(k): unquote(v) for k, v in parse_qsl(raw, keep_blank_values=True)}


def _parse_time(raw: str) -> float:
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, f"invalid time '{raw}'") from None


def _filtered(request: Request, default_states: set[str]) -> list[SandboxRecord]:
    params = request.query_params
    metadata = _metadata_filter(params.get("metadata") or params.get("query"))
    states = {s for s in (params.get("state") or "").split(",") if s} or default_states
    unknown = states - {"running", "paused"}
    if unknown:
        raise ApiError(400, f"unknown state '{sorted(unknown)[0]}'")
    template = params.get("template")
    started_after = _parse_time(params["startedAfter"]) if params.get("startedAfter") else None
    records = [
        r for r in _manager(request).list()
        if r.state in states
        and all(r.metadata.get(k) == v for k, v in metadata.items())
        and (template is None or template in (r.template_id, r.alias))
        and (started_after is None or r.started_at >= started_after)
    ]
    records.sort(key=lambda r: (r.started_at, r.sandbox_id), reverse=params.get("order", "desc") != "asc")
    return records


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _decode_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        raise ApiError(400, "'nextToken' is not a token this server issued") from None
    # Only what _encode_token writes: decimal digits (no sign, no spaces, no underscores).
    if not text.isascii() or not text.isdigit():
        raise ApiError(400, "'nextToken' is not a token this server issued")
    return int(text)


def page_of(request: Request, items: list[T], max_page: int) -> tuple[list[T], dict[str, str]]:
    """The page `limit` and `nextToken` ask for, and the `X-Next-Token` header when more follow."""
    limit = request.query_params.get("limit")
    try:
        size = min(int(limit), max_page) if limit else max_page
    except ValueError:
        raise ApiError(400, "'limit' must be an integer") from None
    if size < 1:
        raise ApiError(400, "'limit' must be at least 1")
    token = request.query_params.get("nextToken")
    offset = _decode_token(token) if token else 0
    headers = {}
    if offset + size < len(items):
        headers["X-Next-Token"] = _encode_token(offset + size)
    return items[offset:offset + size], headers


async def list_sandboxes_v2(request: Request) -> Response:
    records = _filtered(request, {"running", "paused"})
    page, headers = page_of(request, records, MAX_PAGE)
    headers["X-Total-Running"] = str(sum(r.state == "running" for r in records))
    return JSONResponse([wire.listed(r) for r in page], headers=headers)


async def list_sandboxes_v1(request: Request) -> Response:
    return JSONResponse([wire.listed(r) for r in _filtered(request, {"running"})])


async def get_sandbox(request: Request) -> Response:
    return JSONResponse(wire.detail(_manager(request).get(request.path_params["sandbox_id"])))


async def kill_sandbox(request: Request) -> Response:
    await _manager(request).kill(request.path_params["sandbox_id"])
    return Response(status_code=204)


async def set_timeout(request: Request) -> Response:
    data = await _json(request)
    timeout = _int_field(data, "timeout", None)
    if timeout is None:
        raise ApiError(400, "'timeout' is required")
    _manager(request).set_timeout(request.path_params["sandbox_id"], timeout)
    return Response(status_code=204)


async def refresh(request: Request) -> Response:
    data = await _json(request)
    duration = _int_field(data, "duration", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT
    _manager(request).extend_timeout(request.path_params["sandbox_id"], duration)
    return Response(status_code=204)


def _range_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be a Unix timestamp in seconds") from None


async def sandbox_metrics(request: Request) -> Response:
    series = _manager(request).metrics(request.path_params["sandbox_id"])
    samples = series.between(_range_param(request, "start"), _range_param(request, "end"))
    return JSONResponse([s.to_wire() for s in samples])


async def many_metrics(request: Request) -> Response:
    manager = _manager(request)
    ids = [i for i in (request.query_params.get("sandbox_ids") or "").split(",") if i]
    out = {}
    for sandbox_id in ids:
        if sandbox_id in manager.records and manager.metrics(sandbox_id).samples:
            out[sandbox_id] = manager.metrics(sandbox_id).samples[-1].to_wire()
    return JSONResponse({"sandboxes": out})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "time": time.time()})


def routes() -> list[Route]:
    """Every control-plane route."""
    from e2b_local.control import api_persistence

    sid = "/sandboxes/{sandbox_id}"
    return [
        *api_persistence.routes(),
        Route("/health", health, methods=["GET"]),
        Route("/v2/sandboxes", create_sandbox, methods=["POST"]),
        Route("/sandboxes", create_sandbox, methods=["POST"]),
        Route("/v2/sandboxes", list_sandboxes_v2, methods=["GET"]),
        Route("/sandboxes", list_sandboxes_v1, methods=["GET"]),
        Route("/sandboxes/metrics", many_metrics, methods=["GET"]),
        Route(sid, get_sandbox, methods=["GET"]),
        Route(sid, kill_sandbox, methods=["DELETE"]),
        Route(sid + "/timeout", set_timeout, methods=["POST"]),
        Route(sid + "/refreshes", refresh, methods=["POST"]),
        Route(sid + "/metrics", sandbox_metrics, methods=["GET"]),
    ]
