"""Routes for lifecycle events (`/events/sandboxes`) and webhooks (`/events/webhooks`), in E2B's shapes."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from e2b_local.control.api import params
from e2b_local.control.api.context import services
from e2b_local.control.api.params import json_body
from e2b_local.control.errors import ApiError
from e2b_local.control.services.events import EVENT_TYPES, Events, Webhook

# The events API's page size: default and bounds.
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_NAME = 256
MAX_URL = 2048


def _events(request: Request) -> Events:
    return services(request).fleet.events


def _types(values: list[str]) -> list[str]:
    unknown = [t for t in values if t not in EVENT_TYPES]
    if unknown:
        raise ApiError(400, f"unknown event type '{unknown[0]}'; known types: {', '.join(EVENT_TYPES)}")
    return values


async def list_events(request: Request) -> Response:
    """`GET /events/sandboxes[/{sandbox_id}]`: `offset`, `limit` (1-100), `orderAsc`, `types` (repeatable)."""
    query = request.query_params
    order = query.get("orderAsc", "false").lower()
    if order not in ("true", "false"):
        raise ApiError(400, "'orderAsc' must be true or false")
    types = _types([t for value in query.getlist("types") for t in value.split(",") if t])
    found = _events(request).list(request.path_params.get("sandbox_id"), types,
                                  params.query_int(request, "offset", 0, 0),
                                  params.query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT), order == "true")
    return JSONResponse(found)


def _string(data: dict[str, Any], name: str, limit: int) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string")
    if len(value) > limit:
        raise ApiError(400, f"'{name}' must be at most {limit} characters long")
    return value


def _url(data: dict[str, Any]) -> str:
    url = _string(data, "url", MAX_URL)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "'url' must be an http or https URL")
    return url


def _event_list(data: dict[str, Any]) -> list[str]:
    value = data["events"]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ApiError(400, "'events' must be a non-empty list of event types")
    return list(dict.fromkeys(_types(value)))


def _apply(webhook: Webhook, data: dict[str, Any]) -> None:
    if "name" in data:
        webhook.name = _string(data, "name", MAX_NAME)
    if "url" in data:
        webhook.url = _url(data)
    if "events" in data:
        webhook.events = _event_list(data)
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise ApiError(400, "'enabled' must be a boolean")
        webhook.enabled = data["enabled"]
    if "signatureSecret" in data:
        webhook.signature_secret = _string(data, "signatureSecret", MAX_URL)
        if not webhook.signature_secret:
            raise ApiError(400, "'signatureSecret' must not be empty")


async def create_webhook(request: Request) -> Response:
    data = await json_body(request)
    for required in ("url", "events", "signatureSecret"):
        if required not in data:
            raise ApiError(400, f"'{required}' is required")
    webhook = Webhook(id=str(uuid.uuid4()), name="", url="", events=[])
    _apply(webhook, data)
    _events(request).save_webhook(webhook)
    return JSONResponse(webhook.to_wire(), status_code=201)


async def list_webhooks(request: Request) -> Response:
    return JSONResponse([w.to_wire() for w in _events(request).webhooks()])


def _found(request: Request) -> Webhook:
    webhook_id = request.path_params["webhook_id"]
    webhook = _events(request).webhook(webhook_id)
    if webhook is None:
        raise ApiError(404, f"webhook '{webhook_id}' not found")
    return webhook


async def get_webhook(request: Request) -> Response:
    return JSONResponse(_found(request).to_wire())


async def update_webhook(request: Request) -> Response:
    webhook = _found(request)
    _apply(webhook, await json_body(request))
    _events(request).save_webhook(webhook)
    return JSONResponse(webhook.to_wire())


async def delete_webhook(request: Request) -> Response:
    webhook_id = request.path_params["webhook_id"]
    if not _events(request).delete_webhook(webhook_id):
        raise ApiError(404, f"webhook '{webhook_id}' not found")
    return Response(status_code=200)


def routes() -> list[Route]:
    hook = "/events/webhooks/{webhook_id}"
    return [
        Route("/events/sandboxes", list_events, methods=["GET"]),
        Route("/events/sandboxes/{sandbox_id}", list_events, methods=["GET"]),
        Route("/events/webhooks", create_webhook, methods=["POST"]),
        Route("/events/webhooks", list_webhooks, methods=["GET"]),
        Route(hook, get_webhook, methods=["GET"]),
        Route(hook, update_webhook, methods=["PATCH"]),
        Route(hook, delete_webhook, methods=["DELETE"]),
    ]
