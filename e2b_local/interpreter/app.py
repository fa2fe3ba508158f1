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
from pathlib import Path

from starlette.types import Receive, Scope, Send

from e2b_local.asgi import BodyError, read_json_object, respond_json, respond_text
from e2b_local.interpreter.contexts import ContextManager, InvalidCwdError
from e2b_local.interpreter.execution import Execution, watch_disconnect
from e2b_local.interpreter.kernels import KernelDiedError
from e2b_local.interpreter.languages import KernelNotInstalledError, UnsupportedLanguageError
from e2b_local.interpreter.sandbox import Sandbox
from e2b_local.protocol import CODE_INTERPRETER_TEMPLATE

# Written into the code-interpreter root filesystem (see e2b_local.isolation.rootfs): the agent of
# such a sandbox starts the Python kernel as soon as it starts, before the sandbox is handed out.
TEMPLATE_MARKER = Path("/etc/e2b/template")


def ships_kernels(marker: Path = TEMPLATE_MARKER) -> bool:
    """True in a sandbox of the code-interpreter template."""
    try:
        return marker.read_text().strip() == CODE_INTERPRETER_TEMPLATE
    except OSError:
        return False


class InterpreterApp:
    """Routes code-interpreter requests; one instance per agent, built by the agent at its start."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.contexts = ContextManager(sandbox)

    async def prestart(self) -> None:
        """Create the default Python and JavaScript contexts, starting Python's kernel now (at the agent's start).

        Returns once the kernel's process is started; the kernel goes on starting in the background.
        """
        await self.contexts.prestart("python")
        self.contexts.declare_default("javascript")

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
                await respond_json(send, 200, [ctx.to_json() for ctx in self.contexts.list()])
            elif len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart" and method == "POST":
                await self.restart_context(parts[1], send)
            elif len(parts) == 2 and parts[0] == "contexts" and method == "DELETE":
                await self.remove_context(parts[1], send)
            elif parts == ["health"] and method == "GET":
                await respond_json(send, 200, "OK")
            else:
                await respond_text(send, 404, "Not Found")
        except BodyError as exc:
            await respond_text(send, 400, str(exc))

    async def execute(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /execute."""
        body = await read_json_object(receive)
        code = body.get("code")
        if not isinstance(code, str):
            raise BodyError("'code' must be a string")
        context_id, language = body.get("context_id"), body.get("language")
        if context_id and language:
            await respond_text(send, 400, "Only one of context_id or language can be provided")
            return
        if context_id:
            ctx = self.contexts.get(str(context_id))
            if ctx is None:
                await respond_text(send, 404, f"Context {context_id} not found")
                return
        else:
            try:
                ctx = await self.contexts.default(language)
            except (UnsupportedLanguageError, KernelNotInstalledError, KernelDiedError, OSError) as exc:
                await respond_text(send, 500, f"Failed to create context: {exc}")
                return
        env_vars = body.get("env_vars")
        if env_vars is not None and not isinstance(env_vars, dict):
            raise BodyError("'env_vars' must be an object")
        execution = Execution(self.contexts, ctx, code, env_vars)
        watcher = asyncio.create_task(watch_disconnect(receive, execution))
        try:
            await execution.run(send)
        finally:
            watcher.cancel()

    async def create_context(self, receive: Receive, send: Send) -> None:
        """POST /contexts."""
        body = await read_json_object(receive)
        try:
            ctx = await self.contexts.create(body.get("language"), body.get("cwd"))
        except (UnsupportedLanguageError, KernelNotInstalledError, KernelDiedError, InvalidCwdError,
                OSError) as exc:
            await respond_text(send, 500, f"Failed to create context: {exc}")
            return
        await respond_json(send, 200, ctx.to_json())

    async def restart_context(self, context_id: str, send: Send) -> None:
        """POST /contexts/{id}/restart."""
        ctx = self.contexts.get(context_id)
        if ctx is None:
            await respond_text(send, 404, f"Context {context_id} not found")
            return
        try:
            await self.contexts.restart(ctx)
        except (KernelDiedError, OSError) as exc:
            await respond_text(send, 500, f"Failed to restart context {context_id}: {exc}")
            return
        await respond_json(send, 200, None)

    async def remove_context(self, context_id: str, send: Send) -> None:
        """DELETE /contexts/{id}."""
        ctx = self.contexts.get(context_id)
        if ctx is None:
            await respond_text(send, 404, f"Context {context_id} not found")
            return
        await self.contexts.remove(ctx)
        await respond_json(send, 200, None)

