"""One `/execute` request: run the code in a context's kernel and stream NDJSON lines as they come.

Executions of a context run one at a time. Before the code, a hidden (silent) execution brings the
kernel's environment up to date: the sandbox's env vars, which may have arrived through the agent's
/init after the kernel started (warm-pool sandboxes start their Python kernel before they are handed
out), and the request's own `env_vars`. After it, another hidden execution restores those, the way
E2B's server does: back to the sandbox's value, or unset. A client that disconnects (the SDK's
timeout closes the connection) interrupts the kernel; if the code does not stop soon after, the
kernel is restarted so that the context is usable again.

The status line and headers go out as soon as the code is submitted, as E2B's server sends them:
a client whose sandbox is killed during a long cell then sees its response broken off, which the
SDK reports as the sandbox killed. Every write crosses the host's proxy and wakes three processes,
so lines are written in as few writes as streaming allows: whatever is queued goes out together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from starlette.types import Receive, Send

from e2b_local.asgi import respond_text
from e2b_local.interpreter.contexts import RESTARTED, Context, ContextManager
from e2b_local.interpreter.kernels import Kernel, KernelDiedError, KernelExit, Submission
from e2b_local.interpreter.languages import KernelNotInstalledError
from e2b_local.interpreter.outputs import END_OF_EXECUTION, KEEPALIVE, Translator, encode, error_line

log = logging.getLogger("e2b_local.interpreter")

# Silence after which a keepalive line is written (E2B's server does the same after 5 s).
KEEPALIVE_SECONDS = 5.0
# How long interrupted code may take to stop before its kernel is restarted instead.
INTERRUPT_GRACE_SECONDS = 3.0
# After a fence's request is idle, how long its token may still take to arrive (see Language.fence).
FENCE_GRACE_SECONDS = 1.0
# How long the hidden environment snippets may run.
HIDDEN_TIMEOUT_SECONDS = 10.0
# Queued on an execution when its client hangs up.
DISCONNECTED = object()
NDJSON_HEADERS = [(b"content-type", b"application/x-ndjson"), (b"cache-control", b"no-store")]


class Execution:
    """The state of one request while it streams."""

    def __init__(self, manager: ContextManager, ctx: Context, code: str, env_vars: dict[str, str] | None) -> None:
        self.manager = manager
        self.ctx = ctx
        self.code = code
        self.env_vars = {str(k): str(v) for k, v in (env_vars or {}).items()}
        self.gone = False
        self.submission: Submission | None = None

    def client_gone(self) -> None:
        """Called when the HTTP client disconnects."""
        self.gone = True
        if self.submission is not None:
            self.submission.put(DISCONNECTED)

    async def run(self, send: Send) -> None:
        """Stream the execution to `send`; the context stays locked until the kernel is idle again."""
        ctx = self.ctx
        await ctx.lock.acquire()
        release_now = True
        try:
            try:
                kernel = await self.manager.kernel_for(ctx)
            except (KernelDiedError, KernelNotInstalledError, OSError, ValueError) as exc:
                await respond_text(send, 500, f"Failed to start the {ctx.language.name} kernel: {exc}")
                return
            if self.gone:
                return
            await self._sync_env(kernel)
            self.submission = kernel.submit(self.code)
            if self.gone:
                self.submission.put(DISCONNECTED)
            try:
                await send({"type": "http.response.start", "status": 200, "headers": NDJSON_HEADERS})
                finished = await self._stream(kernel, self.submission, send)
                if finished is None:
                    # The kernel died (killed from inside, say) before it took the code: the code
                    # never ran, so it runs on the context's replacement kernel instead.
                    self.submission.close()
                    kernel = await self.manager.kernel_for(ctx)
                    await self._sync_env(kernel)
                    self.submission = kernel.submit(self.code)
                    finished = await self._stream(kernel, self.submission, send, retry=False)
            except BaseException:
                self.submission.close()
                raise
            # Work left after the response (restoring env vars, stopping abandoned code) runs in the
            # background and keeps the context locked until it is done.
            if not finished:
                kernel.interrupt()
                release_now = False
                self._after(self._abandon(kernel, self.submission))
            else:
                self.submission.close()
                if self.env_vars:
                    release_now = False
                    self._after(self._restore_env(kernel))
        finally:
            if release_now:
                ctx.lock.release()

    async def _stream(self, kernel: Kernel, submission: Submission, send: Send, retry: bool = True) -> bool | None:
        """Forward the submission's outputs; False when the client left before the end.

        With `retry`, None when the kernel died before it sent anything for the submission.
        """
        received = False
        translator = Translator(submission.msg_id, self.ctx.language.result_quote)
        fence = self.ctx.language.fence
        # Lines that wait for the next write rather than take one of their own (each write travels
        # through the host's proxy): number_of_executions, and the main result, which the kernel
        # follows with nothing but its idle status.
        held: list[dict[str, Any]] = []
        while True:
            try:
                async with asyncio.timeout(FENCE_GRACE_SECONDS if translator.fence_idle else KEEPALIVE_SECONDS):
                    item = await submission.get()
            except TimeoutError:
                if translator.fence_idle:  # the fence ran but its token never came: give up waiting
                    await self._write(send, encode([*held, END_OF_EXECUTION]), more=False)
                    return True
                await self._write(send, encode([*held, KEEPALIVE]))
                held = []
                continue
            lines, held = held, []
            # Whatever else is already queued goes out in the same write.
            while True:
                if item is DISCONNECTED:
                    return False
                if isinstance(item, KernelExit):
                    if retry and not received and not lines and not held:
                        return None
                    lines += [error_line(item.name, item.message), END_OF_EXECUTION]
                    await self._write(send, encode(lines), more=False)
                    return True
                assert isinstance(item, dict)
                received = True
                line = translator.line(item)
                if line is not None:
                    lines.append(line)
                if translator.idle and fence is not None and translator.fence_token is None:
                    translator.fence_token = f"\x1ee2b-local-fence-{secrets.token_hex(8)}"
                    kernel.submit(fence(translator.fence_token), silent=True, into=submission)
                if translator.finished:
                    lines.append(END_OF_EXECUTION)
                    await self._write(send, encode(lines), more=False)
                    return True
                if submission.empty():
                    break
                item = submission.get_nowait()
            if lines and (lines[-1]["type"] == "number_of_executions" or lines[-1].get("is_main_result")):
                held = lines
            elif lines:
                await self._write(send, encode(lines))

    async def _write(self, send: Send, data: bytes, more: bool = True) -> None:
        await _body(send, data, more)

    # -- environment -------------------------------------------------------------------------------
    async def _sync_env(self, kernel: Kernel) -> None:
        wanted = self.manager.sandbox.sandbox_env()
        held = self.ctx.env
        assign = {k: v for k, v in wanted.items() if held.get(k) != v}
        remove = [k for k in held if k not in wanted]
        self.ctx.env = wanted
        assign.update(self.env_vars)
        if assign or remove:
            await run_hidden(kernel, self.ctx.language.env_code(assign, remove))

    async def _restore_env(self, kernel: Kernel) -> None:
        if not self.env_vars or not kernel.alive:
            return
        wanted = self.ctx.env
        assign = {k: wanted[k] for k in self.env_vars if k in wanted}
        remove = [k for k in self.env_vars if k not in wanted]
        await run_hidden(kernel, self.ctx.language.env_code(assign, remove))

    # -- after the response ------------------------------------------------------------------------
    async def _abandon(self, kernel: Kernel, submission: Submission) -> None:
        """Wait for interrupted code to stop; restart the kernel if it will not."""
        self.submission = None
        stopped = await _wait_idle(submission, INTERRUPT_GRACE_SECONDS)
        if not stopped and kernel.alive and self.ctx.kernel is kernel:
            log.info("context %s did not stop after an interrupt; restarting its kernel", self.ctx.id)
            await kernel.shutdown(*RESTARTED)
            with contextlib.suppress(Exception):
                await self.manager.kernel_for(self.ctx)
            return
        await self._restore_env(kernel)

    def _after(self, work: Any) -> None:
        """Finish `work` in the background, then let the context's next execution in."""

        async def finish() -> None:
            try:
                await work
            except Exception:
                log.exception("cleaning up after an execution in context %s", self.ctx.id)
            finally:
                self.ctx.lock.release()

        self.manager.spawn(finish())


async def run_hidden(kernel: Kernel, code: str) -> None:
    """Run code silently (no outputs, no execution count); errors are only logged."""
    submission = kernel.submit(code, silent=True)
    if not await _wait_idle(submission, HIDDEN_TIMEOUT_SECONDS, report=True):
        kernel.interrupt()


async def _wait_idle(submission: Submission, timeout: float, report: bool = False) -> bool:
    """Drain a submission until its kernel is idle or gone; False on timeout."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                item = await submission.get()
                if isinstance(item, KernelExit):
                    return True
                if not isinstance(item, dict):
                    continue
                if report and item["msg_type"] == "error":
                    log.warning("hidden execution failed: %s: %s", item["content"].get("ename"),
                                item["content"].get("evalue"))
                if item["msg_type"] == "status" and item["content"].get("execution_state") == "idle":
                    return True
    except TimeoutError:
        return False
    finally:
        submission.close()


async def watch_disconnect(receive: Receive, execution: Execution) -> None:
    """Tell the execution when its client hangs up (the request body has been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            execution.client_gone()
            return


async def _body(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})

