"""Request parameters: the JSON body, its fields, and query parameters, parsed and validated (400 otherwise)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request

from e2b_local.control.errors import ApiError
from e2b_local.control.registry import Lifecycle, OnTimeout, SandboxState

# Control-plane bodies are small JSON objects (create with its metadata and env vars is the largest):
# 1 MiB is far beyond real use, and what the server reads of a body before it refuses it.
MAX_JSON_BODY = 1024 * 1024
# Metadata is for labels and filters, not storage: limits on each key and value (in UTF-8 bytes).
MAX_METADATA_KEY = 256
MAX_METADATA_VALUE = 16 * 1024
# The API's page size limit for lists.
MAX_PAGE = 100
T = TypeVar("T")


def _too_large(limit: int, kind: str) -> ApiError:
    return ApiError(413, f"request body too large: {kind} requests are limited to {limit} bytes")


async def _body(request: Request, limit: int, kind: str) -> bytes:
    """The request body, read no further than `limit` bytes (413 past it)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit, kind)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, kind)
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, limit: int = MAX_JSON_BODY, kind: str = "control-plane") -> dict[str, Any]:
    """The request's JSON object ({} for an empty body), of at most `limit` bytes."""
    body = await _body(request, limit, kind)
    if not body:
        return {}
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def query_int(request: Request, name: str, default: int | None, low: int = 0, high: int | None = None) -> int | None:
    """An integer query parameter within [low, high]; `default` when it is absent or empty."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be an integer") from None
    if value < low or (high is not None and value > high):
        if high is not None:
            raise ApiError(400, f"'{name}' must be between {low} and {high}")
        raise ApiError(400, f"'{name}' must not be negative" if low == 0 else f"'{name}' must be at least {low}")
    return value


def int_field(data: dict[str, Any], name: str, default: int | None) -> int | None:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer")
    return value


def bool_field(data: dict[str, object], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be a boolean")
    return value


def optional_bool(value: object, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ApiError(400, f"'{name}' must be a boolean")


def str_map(data: dict[str, Any], name: str) -> dict[str, str]:
    value = data.get(name) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ApiError(400, f"'{name}' must be an object of strings")
    return value


def metadata(data: dict[str, Any]) -> dict[str, str]:
    found = str_map(data, "metadata")
    for key, value in found.items():
        if len(key.encode()) > MAX_METADATA_KEY:
            raise ApiError(400, f"'metadata' keys must be at most {MAX_METADATA_KEY} bytes long")
        if len(value.encode()) > MAX_METADATA_VALUE:
            raise ApiError(400, f"'metadata' value of '{key[:64]}' is longer than {MAX_METADATA_VALUE} bytes")
    return found


def lifecycle(data: dict[str, Any]) -> Lifecycle | None:
    """The lifecycle create's autoPause / autoResume fields ask for (None when they are absent)."""
    auto_pause = optional_bool(data.get("autoPause"), "autoPause")
    optional_bool(data.get("autoPauseMemory"), "autoPauseMemory")
    auto_resume = data.get("autoResume")
    if isinstance(auto_resume, dict):
        resume = optional_bool(auto_resume.get("enabled"), "autoResume.enabled")
    else:
        # The SDK sends {"enabled": ...}; a bare boolean is accepted as the same.
        resume = optional_bool(auto_resume, "autoResume")
    if "autoPause" not in data and "autoResume" not in data:
        return None
    found = Lifecycle(on_timeout=OnTimeout.PAUSE if auto_pause else OnTimeout.KILL, auto_resume=bool(resume))
    if found.auto_resume and not found.pauses:
        raise ApiError(400, "autoResume needs autoPause: only a paused sandbox can be resumed")
    if found.auto_resume and data.get("autoPauseMemory") is False:
        raise ApiError(400, "autoResume cannot be combined with a filesystem-only auto-pause (autoPauseMemory: false)")
    return found


def metadata_filter(raw: str | None) -> dict[str, str]:
    """List's metadata filter."""
    # The SDK quotes keys and values, joins them as a query string, and the HTTP layer quotes that
    # again: Starlette undid the outer layer, parse_qsl the second, unquote the SDK's own.
    if not raw:
        return {}
    return {unquote(k): unquote(v) for k, v in parse_qsl(raw, keep_blank_values=True)}


def states(raw: str | None, default: set[SandboxState]) -> set[SandboxState]:
    """List's `state` filter: comma-separated states."""
    names = {s for s in (raw or "").split(",") if s}
    unknown = names - {s.value for s in SandboxState}
    if unknown:
        raise ApiError(400, f"unknown state '{sorted(unknown)[0]}'")
    return {SandboxState(s) for s in names} or default


def parse_time(raw: str) -> float:
    """An RFC 3339 time, as Unix seconds."""
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, f"invalid time '{raw}'") from None


def timestamp(request: Request, name: str) -> float | None:
    """A query parameter holding Unix seconds (None when absent or empty)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be a Unix timestamp in seconds") from None


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def decode_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        raise ApiError(400, "'nextToken' is not a token this server issued") from None
    # Only what encode_token writes: decimal digits (no sign, no spaces, no underscores).
    if not text.isascii() or not text.isdigit():
        raise ApiError(400, "'nextToken' is not a token this server issued")
    return int(text)


def page_of(request: Request, items: list[T], max_page: int = MAX_PAGE) -> tuple[list[T], dict[str, str]]:
    """The page `limit` and `nextToken` ask for, and the `X-Next-Token` header when more follow."""
    limit = request.query_params.get("limit")
    try:
        size = min(int(limit), max_page) if limit else max_page
    except ValueError:
        raise ApiError(400, "'limit' must be an integer") from None
    if size < 1:
        raise ApiError(400, "'limit' must be at least 1")
    token = request.query_params.get("nextToken")
    offset = decode_token(token) if token else 0
    headers = {}
    if offset + size < len(items):
        headers["X-Next-Token"] = encode_token(offset + size)
    return items[offset:offset + size], headers
