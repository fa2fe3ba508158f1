"""E2B's template REST API: build requests, uploads, build status, templates, aliases and tags."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from e2b_local.control.api import params, persistence
from e2b_local.control.api.context import services
from e2b_local.control.api.wire import iso
from e2b_local.control.errors import ApiError
from e2b_local.control.templates.records import READY, BuildRecord, TemplateRecord
from e2b_local.control.templates.service import TemplateService, split_name
from e2b_local.protocol import TEMPLATES

# The path of upload links; open without the API key (the SDK sends none), checked by signature.
UPLOAD_PREFIX = "/template-uploads/"
MAX_JSON = 4 * 1024 * 1024
# The status endpoint's default and largest page of log entries (E2B answers at most 100).
LOG_PAGE = 100
ENVD_VERSION = "0.6.7"


def _service(request: Request) -> TemplateService:
    return services(request).templates


def _iso(at: float | None) -> str | None:
    return None if at is None else iso(at)


def _log_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A stored log entry in E2B's shape."""
    out: dict[str, Any] = {"timestamp": iso(entry["at"]), "level": entry["level"], "message": entry["message"]}
    if "step" in entry:
        out["step"] = entry["step"]
    return out


def _reason(reason: dict[str, Any]) -> dict[str, Any]:
    return {**reason, "logEntries": [_log_entry(e) for e in reason.get("logEntries", [])]}


def _optional_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(400, f"'{name}' must be a positive integer")
    return value


def _names(template: TemplateRecord) -> list[str]:
    return [template.name]


def _template(service: TemplateService, template: TemplateRecord) -> dict[str, Any]:
    builds = service.registry.builds(template.template_id)
    default = template.tag("default")
    ready = [b for b in builds if b.status == READY]
    current = next((b for b in builds if default and b.build_id == default.build_id), None) or \
        (ready[-1] if ready else (builds[-1] if builds else None))
    return {
        "templateID": template.template_id,
        "buildID": current.build_id if current else "",
        "cpuCount": template.cpu_count,
        "memoryMB": template.memory_mb,
        "diskSizeMB": service.fleet.disk_mb,
        "public": False,
        "aliases": _names(template),
        "names": _names(template),
        "createdAt": _iso(template.created_at),
        "updatedAt": _iso(template.updated_at),
        "createdBy": None,
        "lastSpawnedAt": _iso(template.last_spawned_at),
        "spawnCount": template.spawn_count,
        "buildCount": template.build_count,
        "envdVersion": ENVD_VERSION,
        "buildStatus": current.status if current else "waiting",
    }


def _build(build: BuildRecord) -> dict[str, Any]:
    out = {
        "buildID": build.build_id, "status": build.status, "createdAt": _iso(build.created_at),
        "updatedAt": _iso(build.updated_at), "cpuCount": build.cpu_count, "memoryMB": build.memory_mb,
        "envdVersion": ENVD_VERSION,
    }
    if build.finished_at is not None:
        out["finishedAt"] = _iso(build.finished_at)
    return out


# -- builds ----------------------------------------------------------------------------------------
async def request_build(request: Request) -> Response:
    data = await params.json_body(request, MAX_JSON, "template")
    name = data.get("name") or data.get("alias")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "'name' is required")
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ApiError(400, "'tags' must be a list of strings")
    template, build = _service(request).request(name, tags, _optional_int(data, "cpuCount"),
                                                _optional_int(data, "memoryMB"))
    return JSONResponse({"templateID": template.template_id, "buildID": build.build_id, "public": False,
                         "names": _names(template), "tags": build.tags, "aliases": _names(template)},
                        status_code=202)


async def start_build(request: Request) -> Response:
    service = _service(request)
    build = service.build(request.path_params["template_id"], request.path_params["build_id"])
    data = await params.json_body(request, MAX_JSON, "template")
    steps = data.get("steps") or []
    if not isinstance(steps, list) or not all(isinstance(s, dict) and isinstance(s.get("type"), str) for s in steps):
        raise ApiError(400, "'steps' must be a list of steps, each with a 'type'")
    recipe = {k: data[k] for k in ("fromImage", "fromTemplate", "fromImageRegistry", "force", "steps",
                                   "startCmd", "readyCmd") if k in data}
    recipe["steps"] = steps
    service.start(build, recipe)
    return Response(status_code=202)


async def build_status(request: Request) -> Response:
    service = _service(request)
    build = service.build(request.path_params["template_id"], request.path_params["build_id"])
    params = request.query_params
    try:
        offset = int(params.get("logsOffset") or 0)
        limit = min(int(params.get("limit") or LOG_PAGE), LOG_PAGE)
    except ValueError:
        raise ApiError(400, "'logsOffset' and 'limit' must be integers") from None
    entries = service.entries(build.build_id)
    level = params.get("level")
    if level:
        order = ["debug", "info", "warn", "error"]
        floor = order.index(level) if level in order else 0
        entries = [e for e in entries if order.index(e["level"]) >= floor]
    page = entries[max(offset, 0):max(offset, 0) + max(limit, 0)]
    out: dict[str, Any] = {"logs": [], "logEntries": [_log_entry(e) for e in page],
                           "templateID": build.template_id, "buildID": build.build_id, "status": build.status}
    if build.reason:
        out["reason"] = _reason(build.reason)
    return JSONResponse(out)


async def build_logs(request: Request) -> Response:
    service = _service(request)
    build = service.build(request.path_params["template_id"], request.path_params["build_id"])
    entries = service.entries(build.build_id)
    params = request.query_params
    try:
        cursor = int(params.get("cursor") or 0)
        limit = int(params.get("limit") or LOG_PAGE)
    except ValueError:
        raise ApiError(400, "'cursor' and 'limit' must be integers") from None
    ordered = entries if params.get("direction", "forward") == "forward" else list(reversed(entries))
    return JSONResponse({"logs": [_log_entry(e) for e in ordered[cursor:cursor + limit]]})


# -- uploads ---------------------------------------------------------------------------------------
async def upload_link(request: Request) -> Response:
    service = _service(request)
    template = service.get(request.path_params["template_id"])
    files_hash = request.path_params["hash"]
    path = service.upload_path(files_hash)
    signature = service.upload_signature(template.template_id, files_hash)
    base = str(request.base_url).rstrip("/")
    url = f"{base}{UPLOAD_PREFIX}{template.template_id}/{files_hash}?signature={signature}"
    return JSONResponse({"present": path.is_file(), "url": url}, status_code=201)


async def upload(request: Request) -> Response:
    service = _service(request)
    template_id, files_hash = request.path_params["template_id"], request.path_params["hash"]
    expected = service.upload_signature(template_id, files_hash)
    if not hmac.compare_digest(request.query_params.get("signature", ""), expected):
        raise ApiError(403, "invalid upload signature")
    target = service.upload_path(files_hash)
    partial = target.with_name(f".{files_hash}.{secrets.token_hex(4)}")
    f = await asyncio.to_thread(open, partial, "wb")
    try:
        async for chunk in request.stream():
            await asyncio.to_thread(f.write, chunk)
        await asyncio.to_thread(f.close)
        os.replace(partial, target)
    finally:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return Response(status_code=200)


# -- templates -------------------------------------------------------------------------------------
async def list_templates(request: Request) -> Response:
    service = _service(request)
    templates = sorted(service.registry.templates(), key=lambda t: t.created_at)
    return JSONResponse([_template(service, t) for t in templates])


async def get_template(request: Request) -> Response:
    service = _service(request)
    template = service.get(request.path_params["template_id"])
    out = _template(service, template)
    out["builds"] = [_build(b) for b in reversed(service.registry.builds(template.template_id))]
    return JSONResponse(out)


async def delete_template(request: Request) -> Response:
    service = _service(request)
    reference = request.path_params["template_id"]
    if service.find(reference) is None:
        # Snapshot templates are deleted through the same path.
        return await persistence.delete_snapshot(request)
    await service.delete(reference)
    return Response(status_code=204)


async def alias(request: Request) -> Response:
    reference = request.path_params["alias"]
    name = split_name(reference)[0]
    if name in TEMPLATES:
        return JSONResponse({"templateID": name, "public": True})
    template = _service(request).find(reference)
    if template is None:
        raise ApiError(404, f"template alias '{reference}' not found")
    return JSONResponse({"templateID": template.template_id, "public": False})


# -- tags ------------------------------------------------------------------------------------------
def _tag_list(data: dict[str, Any]) -> list[str]:
    tags = data.get("tags")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
        raise ApiError(400, "'tags' must be a non-empty list of strings")
    return tags


async def assign_tags(request: Request) -> Response:
    service = _service(request)
    data = await params.json_body(request, MAX_JSON, "template")
    target = data.get("target")
    if not isinstance(target, str) or not target:
        raise ApiError(400, "'target' is required ('name:tag')")
    tags = _tag_list(data)
    found = service.tagged_build(target)
    if found is None:
        raise ApiError(404, f"template '{target}' not found")
    template, build = found
    now = time.time()
    for tag in tags:
        template.set_tag(tag, build.build_id, now)
    service.registry.put_template(template)
    return JSONResponse({"tags": tags, "buildID": build.build_id}, status_code=201)


async def remove_tags(request: Request) -> Response:
    service = _service(request)
    data = await params.json_body(request, MAX_JSON, "template")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "'name' is required")
    tags = _tag_list(data)
    template = service.get(name)
    missing = [t for t in tags if t not in template.tags]
    if missing:
        raise ApiError(404, f"tag '{missing[0]}' of template '{name}' not found")
    for tag in tags:
        del template.tags[tag]
    service.registry.put_template(template)
    return Response(status_code=204)


async def list_tags(request: Request) -> Response:
    service = _service(request)
    template = service.get(request.path_params["template_id"])
    return JSONResponse([{"tag": tag, "buildID": value["build_id"], "createdAt": _iso(value["assigned_at"])}
                         for tag, value in sorted(template.tags.items())])


def routes() -> list[Route]:
    """The template routes, ahead of the others: snapshots are deleted through /templates/{id} too,
    which `delete_template` passes on."""
    tid = "/templates/{template_id}"
    return [
        Route("/v3/templates", request_build, methods=["POST"]),
        Route("/v2/templates/{template_id}/builds/{build_id}", start_build, methods=["POST"]),
        Route(tid + "/builds/{build_id}/status", build_status, methods=["GET"]),
        Route(tid + "/builds/{build_id}/logs", build_logs, methods=["GET"]),
        Route(tid + "/files/{hash}", upload_link, methods=["GET"]),
        Route(UPLOAD_PREFIX + "{template_id}/{hash}", upload, methods=["PUT"]),
        Route("/templates/aliases/{alias:path}", alias, methods=["GET"]),
        Route("/templates/tags", assign_tags, methods=["POST"]),
        Route("/templates/tags", remove_tags, methods=["DELETE"]),
        Route("/templates", list_templates, methods=["GET"]),
        Route(tid + "/tags", list_tags, methods=["GET"]),
        Route(tid, get_template, methods=["GET"]),
        Route("/templates/{template_id:path}", delete_template, methods=["DELETE"]),
    ]
