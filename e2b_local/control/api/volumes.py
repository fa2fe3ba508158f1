"""Routes for volumes: the control-plane API (`/volumes`) and the content API (`/volumecontent`).

The content API authenticates with the volume's own token (`Authorization: Bearer`), not the API
key: the server lets its paths through without one, and every route here checks the token.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from e2b_local.control.api import params
from e2b_local.control.api.context import services
from e2b_local.control.api.wire import iso
from e2b_local.control.errors import ApiError
from e2b_local.control.registry import VolumeRecord
from e2b_local.control.volumes import Volumes
from e2b_local.control.volumes.content import ContentError, Entry, VolumeFiles

# Paths of the content API, which the server lets through without the API key.
CONTENT_PREFIX = "/volumecontent/"


def _volumes(request: Request) -> Volumes:
    found = services(request).volumes
    assert found is not None
    return found


def volume(record: VolumeRecord) -> dict[str, Any]:
    """The `Volume` object of list."""
    return {"volumeID": record.volume_id, "name": record.name}


def volume_and_token(record: VolumeRecord) -> dict[str, Any]:
    """The `VolumeAndToken` object of create and get (no `domain`: the SDK's content URL applies)."""
    return {**volume(record), "token": record.token}


def entry(found: Entry) -> dict[str, Any]:
    """The content API's `VolumeEntryStat`."""
    out: dict[str, Any] = {
        "name": found.name, "type": found.type, "path": found.path, "size": found.size, "mode": found.mode,
        "uid": found.uid, "gid": found.gid, "atime": iso(found.atime), "mtime": iso(found.mtime),
        "ctime": iso(found.ctime),
    }
    if found.target is not None:
        out["target"] = found.target
    return out


async def create_volume(request: Request) -> Response:
    data = await params.json_body(request)
    record = await _volumes(request).create(data.get("name"))
    return JSONResponse(volume_and_token(record), status_code=201)


async def list_volumes(request: Request) -> Response:
    return JSONResponse([volume(r) for r in _volumes(request).list()])


async def get_volume(request: Request) -> Response:
    return JSONResponse(volume_and_token(_volumes(request).get(request.path_params["volume_id"])))


async def delete_volume(request: Request) -> Response:
    await _volumes(request).destroy(request.path_params["volume_id"])
    return Response(status_code=204)


# -- content -------------------------------------------------------------------------------------------
def _files(request: Request) -> VolumeFiles:
    """The files of the volume the path names, once the request's bearer token is that volume's."""
    volumes = _volumes(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing volume token: send 'Authorization: Bearer <token>'")
    try:
        record = volumes.get(request.path_params["volume_id"])
    except ApiError:
        # Unknown volume and wrong token look alike to a client without the volume's token.
        raise ApiError(401, "invalid volume token") from None
    if not secrets.compare_digest(token.encode(), record.token.encode()):
        raise ApiError(401, "invalid volume token")
    return volumes.files(record)


def _path(request: Request) -> str:
    path = request.query_params.get("path")
    if not path:
        raise ApiError(400, "'path' is required")
    return path


def _int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be an integer") from None


def _force(request: Request) -> bool:
    return request.query_params.get("force", "").lower() == "true"


async def _run(call: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking content operation, in a worker thread; its failures in the API's error shape."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except ContentError as exc:
        raise ApiError(exc.status, exc.message) from None
    except PermissionError as exc:
        raise ApiError(403, f"permission denied: {exc.strerror}") from None


async def stat_path(request: Request) -> Response:
    files = _files(request)
    return JSONResponse(entry(await _run(files.stat, _path(request))))


async def list_dir(request: Request) -> Response:
    files = _files(request)
    depth = _int(request, "depth")
    entries = await _run(files.list, _path(request), 1 if depth is None else depth)
    return JSONResponse([entry(e) for e in entries])


async def make_dir(request: Request) -> Response:
    files = _files(request)
    made = await _run(files.make_dir, _path(request), _int(request, "uid"), _int(request, "gid"),
                      _int(request, "mode"), _force(request))
    return JSONResponse(entry(made), status_code=201)


async def write_file(request: Request) -> Response:
    files = _files(request)
    path = _path(request)
    loop = asyncio.get_running_loop()
    stream = request.stream()

    async def next_chunk() -> bytes:
        return await stream.__anext__()

    def chunks() -> Iterator[bytes]:
        # The body is read on the event loop, a chunk at a time, while the thread writes.
        while True:
            try:
                chunk = asyncio.run_coroutine_threadsafe(next_chunk(), loop).result()
            except StopAsyncIteration:
                return
            if chunk:
                yield chunk

    written = await _run(files.write, path, chunks(), _int(request, "uid"), _int(request, "gid"),
                         _int(request, "mode"), _force(request))
    return JSONResponse(entry(written), status_code=201)


async def read_file(request: Request) -> Response:
    files = _files(request)
    fd = await _run(files.open_file, _path(request))

    async def body() -> AsyncIterator[bytes]:
        async for chunk in iterate_in_threadpool(files.read_chunks(fd)):
            yield chunk

    return StreamingResponse(body(), media_type="application/octet-stream")


async def update_path(request: Request) -> Response:
    files = _files(request)
    data = await params.json_body(request)
    values = {name: params.int_field(data, name, None) for name in ("uid", "gid", "mode")}
    return JSONResponse(entry(await _run(files.update, _path(request), **values)))


async def remove_path(request: Request) -> Response:
    files = _files(request)
    await _run(files.remove, _path(request))
    return Response(status_code=204)


def routes() -> list[Route]:
    vid = "/volumes/{volume_id}"
    content = "/volumecontent/{volume_id}"
    return [
        Route("/volumes", create_volume, methods=["POST"]),
        Route("/volumes", list_volumes, methods=["GET"]),
        Route(vid, get_volume, methods=["GET"]),
        Route(vid, delete_volume, methods=["DELETE"]),
        Route(content + "/path", stat_path, methods=["GET"]),
        Route(content + "/path", update_path, methods=["PATCH"]),
        Route(content + "/path", remove_path, methods=["DELETE"]),
        Route(content + "/dir", list_dir, methods=["GET"]),
        Route(content + "/dir", make_dir, methods=["POST"]),
        Route(content + "/file", read_file, methods=["GET"]),
        Route(content + "/file", write_file, methods=["PUT"]),
    ]
