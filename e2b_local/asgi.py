"""Raw-ASGI answers and the JSON body reader shared by the agent and the code interpreter.

Both run inside the sandbox, so this module imports nothing of e2b_local's host side.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.types import Receive, Send

JSON_TYPE = b"application/json"
TEXT_TYPE = b"text/plain; charset=utf-8"
# Request bodies read here are small JSON objects; anything bigger is refused.
MAX_JSON_BODY = 64 * 1024 * 1024


class BodyError(ValueError):
    """The request body is not the JSON object expected (the message says why)."""


async def respond(send: Send, status: int, payload: bytes, content_type: bytes,
                  headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send a whole response with a Content-Length, in one body message."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


async def respond_json(send: Send, status: int, value: Any) -> None:
    """Send `value` as a JSON response."""
    await respond(send, status, json.dumps(value).encode(), JSON_TYPE)


async def respond_text(send: Send, status: int, text: str) -> None:
    """Send `text` as a plain-text response."""
    await respond(send, status, text.encode(), TEXT_TYPE)


async def read_json_object(receive: Receive, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    """The request body as a JSON object ({} for an empty body); raises BodyError otherwise."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyError("the client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyError("request body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BodyError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BodyError("the request body must be a JSON object")
    return body
