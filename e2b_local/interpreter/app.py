"""The ASGI application behind port 49999: E2B's code-interpreter API (protocol notes, section 5).

| route                       | answer                                                                  |
|-----------------------------|-------------------------------------------------------------------------|
| POST /execute               | NDJSON stream; 400 both language and context, 404                      |
|                             | unknown context, 500 unknown language or a kernel that cannot start     |
| POST /contexts              | {"id", "language", "cwd"}                                               |
| GET /contexts               | [{"id", "language", "cwd"}, ...]                                        |
| POST /contexts/{id}/restart | null (404 unknown context)                                              |
| DELETE /contexts/{id}       | null (404 unknown context)                                              |
| GET /health                 | "OK"                                                                    |

The host authenticates every request before it is forwarded here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from starlette.types import Receive, Scope, Send

from e2b_local.interpreter.contexts import ContextManager, InvalidCwdError
from e2b_local.interpreter.execution import Execution, watch_disconnect
from e2b_local.interpreter.kernels import KernelDiedError
from e2b_local.interpreter.languages import KernelNotInstalledError, UnsupportedLanguageError

# Written into the code-interpreter root filesystem (see e2b_local.isolation.rootfs): the agent of
# such a sandbox starts the Python kernel as soon as it starts, before the sandbox is handed out.
TEMPLATE_MARKER = Path("/etc/e2b/template")
# What the marker says in that template.
CODE_INTERPRETER_TEMPLATE = "code-interpreter-v1"
# Request bodies here are small JSON objects; anything bigger than this is refused.
MAX_BODY = 64 * 1024 * 1024


def ships_kernels(marker: Path = TEMPLATE_MARKER) -> bool:
    """True in a sandbox of the code-interpreter template."""
    try:
        return marker.read_text().strip() == CODE_INTERPRETER_TEMPLATE
    except OSError:
        return False


class BadRequestError(ValueError):
    """The request body is not the JSON object the route expects."""


class InterpreterApp:
    """Routes code-interpreter requests; one instance per agent."""

    def __init__(self) -> None:
        self.contexts = ContextManager()

    def prestart(self) -> None:
        """Start the default Python kernel now (called when the agent starts)."""
        self.contexts.prestart("python")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        parts = [p for p in scope["path"].split("/") if p]
        try:
            if parts == ["execute"] and method == "POST":
                await self.execute(scope, receive, send)
            elif parts == ["contexts"] and method == "POST":
                await self.create_context(receive, send)
            elif parts == ["contexts"] and method == "GET":
                await _json(send, 200, [ctx.to_json() for ctx in self.contexts.list()])
            elif len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart" and method == "POST":
                await self.restart_context(parts[1], send)
            elif len(parts) == 2 and parts[0] == "contexts" and method == "DELETE":
                await self.remove_context(parts[1], send)
            elif parts == ["health"] and method == "GET":
                await _json(send, 200, "OK")
            else:
                await _text(send, 404, "Not Found")
        except BadRequestError as exc:
            await _text(send, 400, str(exc))

    async def execute(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /execute."""
        body = await _read_json(receive)
        code = body.get("code")
        if not isinstance(code, str):
            raise BadRequestError("'code' must be a string")
        context_id, language = body.get("context_id"), body.get("language")
        if context_id and language:
            await _text(send, 400, "Only one of context_id or language can be provided")
            return
        if context_id:
            ctx = self.contexts.get(str(context_id))
            if ctx is None:
                await _text(send, 404, f"Context {context_id} not found")
                return
        else:
            try:
                ctx = await self.contexts.default(language)
            except (UnsupportedLanguageError, KernelNotInstalledError, KernelDiedError, OSError) as exc:
                await _text(send, 500, f"Failed to create context: {exc}")
                return
        env_vars = body.get("env_vars")
        if env_vars is not None and not isinstance(env_vars, dict):
            raise BadRequestError("'env_vars' must be an object")
        execution = Execution(self.contexts, ctx, code, env_vars)
        watcher = asyncio.create_task(watch_disconnect(receive, execution))
        try:
            await execution.run(send)
        finally:
            watcher.cancel()

    async def create_context(self, receive: Receive, send: Send) -> None:
        """POST /contexts."""
        body = await _read_json(receive)
        try:
            ctx = await self.contexts.create(body.get("language"), body.get("cwd"))
        except (UnsupportedLanguageError, KernelNotInstalledError, KernelDiedError, InvalidCwdError,
                OSError) as exc:
            await _text(send, 500, f"Failed to create context: {exc}")
            return
        await _json(send, 200, ctx.to_json())

    async def restart_context(self, context_id: str, send: Send) -> None:
        """POST /contexts/{id}/restart."""
        ctx = self.contexts.get(context_id)
        if ctx is None:
            await _text(send, 404, f"Context {context_id} not found")
            return
        try:
            await self.contexts.restart(ctx)
        except (KernelDiedError, OSError) as exc:
            await _text(send, 500, f"Failed to restart context {context_id}: {exc}")
            return
        await _json(send, 200, None)

    async def remove_context(self, context_id: str, send: Send) -> None:
        """DELETE /contexts/{id}."""
        ctx = self.contexts.get(context_id)
        if ctx is None:
            await _text(send, 404, f"Context {context_id} not found")
            return
        await self.contexts.remove(ctx)
        await _json(send, 200, None)


_app: InterpreterApp | None = None


def create_app() -> InterpreterApp:
    """The agent's code-interpreter application (one per agent process)."""
    global _app
    if _app is None:
        _app = InterpreterApp()
    return _app


async def _read_json(receive: Receive) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequestError("the client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequestError("request body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequestError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


async def _json(send: Send, status: int, value: Any) -> None:
    await _respond(send, status, json.dumps(value).encode(), b"application/json")


async def _text(send: Send, status: int, text: str) -> None:
    await _respond(send, status, text.encode(), b"text/plain; charset=utf-8")


async def _respond(send: Send, status: int, payload: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
