"""Routes for secrets (`/secrets`): create, list, get, update and delete; values are never returned."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from e2b_local.control.api import params
from e2b_local.control.api.context import services
from e2b_local.control.api.wire import iso
from e2b_local.control.registry import SecretRecord
from e2b_local.control.secrets import Secrets


def _secrets(request: Request) -> Secrets:
    found = services(request).secrets
    assert found is not None
    return found


def secret(record: SecretRecord) -> dict[str, Any]:
    """E2B's `Secret` object (its metadata; never the value)."""
    return {"secretID": record.secret_id, "name": record.name, "currentVersion": record.version,
            "metadata": record.metadata, "createdAt": iso(record.created_at), "updatedAt": iso(record.updated_at)}


async def create_secret(request: Request) -> Response:
    data = await params.json_body(request)
    record = await asyncio.to_thread(_secrets(request).create, data.get("name"), data.get("value"),
                                     data.get("metadata"))
    return JSONResponse(secret(record), status_code=201)


async def list_secrets(request: Request) -> Response:
    records = await asyncio.to_thread(_secrets(request).all)
    page, headers = params.page_of(request, records)
    return JSONResponse([secret(r) for r in page], headers=headers)


async def get_secret(request: Request) -> Response:
    record = await asyncio.to_thread(_secrets(request).get, request.path_params["secret_id"])
    return JSONResponse(secret(record))


async def update_secret(request: Request) -> Response:
    data = await params.json_body(request)
    record = await asyncio.to_thread(_secrets(request).update, request.path_params["secret_id"],
                                     data.get("value"), data.get("metadata"))
    return JSONResponse(secret(record))


async def delete_secret(request: Request) -> Response:
    await asyncio.to_thread(_secrets(request).delete, request.path_params["secret_id"])
    return Response(status_code=204)


def routes() -> list[Route]:
    sid = "/secrets/{secret_id}"
    return [
        Route("/secrets", create_secret, methods=["POST"]),
        Route("/secrets", list_secrets, methods=["GET"]),
        Route(sid, get_secret, methods=["GET"]),
        Route(sid, update_secret, methods=["POST"]),
        Route(sid, delete_secret, methods=["DELETE"]),
    ]
