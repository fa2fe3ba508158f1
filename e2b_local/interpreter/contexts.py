"""E2B's code contexts: each is one kernel with a language and a working directory.

Every language has a default context, created on first use. In a code-interpreter sandbox the
Python and JavaScript ones exist from the agent's start, as on E2B: Python's kernel starts at once, so
that the first `run_code` finds it running or nearly so; JavaScript's kernel (Deno, ~175 MB) starts
on the context's first execution, so that a sandbox that never runs JavaScript does not pay for it. A context
keeps its id across restarts, as a Jupyter kernel id does on E2B. A kernel that dies on its own (out
of memory, `exit()`) is replaced at once, so the next execution finds a fresh one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field

from e2b_local.interpreter.kernels import KERNELS_ROOT, Kernel, KernelDiedError
from e2b_local.interpreter.languages import Language, get_language
from e2b_local.interpreter.sandbox import Sandbox

log = logging.getLogger("e2b_local.interpreter")

# The error a running execution gets when its context is restarted or removed under it.
RESTARTED = ("ContextRestarting", "Context was restarted")
REMOVED = ("ExecutionAborted", "Context was removed")


class InvalidCwdError(ValueError):
    """The working directory asked for a new context does not exist."""


@dataclass(eq=False)
class Context:
    """One context: its kernel, and the lock that runs its executions one at a time."""

    id: str
    language: Language
    cwd: str
    kernel: Kernel | None = None
    # The sandbox env vars the kernel's environment holds (the agent's /init may change them later).
    env: dict[str, str] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    starting: asyncio.Lock = field(default_factory=asyncio.Lock)

    def to_json(self) -> dict[str, str]:
        """The shape of E2B's context objects."""
        return {"id": self.id, "language": self.language.name, "cwd": self.cwd}


def default_cwd(sandbox: Sandbox) -> str:
    """E2B's default working directory: the sandbox's workdir, else the default user's home."""
    workdir = sandbox.default_workdir()
    if workdir:
        return workdir
    try:
        return sandbox.default_account().home
    except LookupError:
        return "/"


class ContextManager:
    """All contexts of the sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        # Directories of kernels a previous agent started (before a reboot of the agent) are stale.
        shutil.rmtree(KERNELS_ROOT, ignore_errors=True)
        # Kernel numbers make each start's directory and log distinct within a context.
        self._kernel_numbers = itertools.count(1)
        self.contexts: dict[str, Context] = {}
        self.defaults: dict[str, str] = {}
        self._default_locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()

    def get(self, context_id: str) -> Context | None:
        """The context with this id, if any."""
        return self.contexts.get(context_id)

    def list(self) -> list[Context]:
        """Every context, default ones included (E2B lists them too)."""
        return list(self.contexts.values())

    async def create(self, language: str | None, cwd: str | None = None) -> Context:
        """A new context with a running kernel (waits until the kernel answers)."""
        ctx = self._new(get_language(language), cwd)
        try:
            await self.kernel_for(ctx)
        except BaseException:
            await self._discard(ctx, REMOVED)
            raise
        return ctx

    async def default(self, language: str | None) -> Context:
        """The language's default context, created if needed (its kernel may still be starting)."""
        lang = get_language(language)
        lock = self._default_locks.setdefault(lang.name, asyncio.Lock())
        async with lock:
            ctx = self.contexts.get(self.defaults.get(lang.name, ""))
            if ctx is None:
                ctx = self._new(lang, None)
                try:
                    await self._ensure_kernel(ctx)
                except BaseException:
                    await self._discard(ctx, REMOVED)
                    raise
                self.defaults[lang.name] = ctx.id
        return ctx

    def declare_default(self, language: str) -> Context:
        """Create the language's default context now; its kernel starts on its first execution."""
        lang = get_language(language)
        ctx = self.contexts.get(self.defaults.get(lang.name, ""))
        if ctx is None:
            ctx = self._new(lang, None)
            self.defaults[lang.name] = ctx.id
        return ctx

    async def prestart(self, language: str = "python") -> None:
        """Create the language's default context now and start its kernel in the background.

        Returns once the kernel's process is started (or could not be), so that what the caller does
        next overlaps the kernel's own start rather than delaying it.
        """
        ctx = self.declare_default(language)
        task = self.spawn(self._prestart(ctx))
        # The task creates the kernel at its first step, before its first wait.
        while ctx.kernel is None and not task.done():
            await asyncio.sleep(0)
        if ctx.kernel is not None:
            spawned = asyncio.ensure_future(ctx.kernel.spawned.wait())
            await asyncio.wait([task, spawned], return_when=asyncio.FIRST_COMPLETED)
            spawned.cancel()

    async def _prestart(self, ctx: Context) -> None:
        try:
            await self.kernel_for(ctx)
        except Exception:
            log.exception("could not start the default %s kernel", ctx.language.name)

    async def kernel_for(self, ctx: Context) -> Kernel:
        """The context's kernel, started or restarted if needed, once it answers."""
        current = ctx.kernel
        if current is not None and current.alive and current.process_exited():
            # Killed a moment ago (kill -9 from inside): replaced now rather than handed this execution.
            await current.wait_exited()
        kernel = await self._ensure_kernel(ctx)
        await kernel.wait_ready()
        return kernel

    async def restart(self, ctx: Context) -> None:
        """Replace the context's kernel with a fresh one (running code gets ContextRestarting)."""
        async with ctx.starting:
            old = ctx.kernel
            ctx.kernel = None
            if old is not None:
                await old.shutdown(*RESTARTED)
        await self.kernel_for(ctx)

    async def remove(self, ctx: Context) -> None:
        """Kill the context's kernel and forget the context."""
        await self._discard(ctx, REMOVED)

    # -- internals ---------------------------------------------------------------------------------
    def _new(self, language: Language, cwd: str | None) -> Context:
        directory = _resolve_cwd(self.sandbox, cwd)
        ctx = Context(str(uuid.uuid4()), language, directory)
        self.contexts[ctx.id] = ctx
        return ctx

    async def _ensure_kernel(self, ctx: Context) -> Kernel:
        async with ctx.starting:
            if ctx.id not in self.contexts:  # removed while a request waited for it
                raise KernelDiedError(f"context {ctx.id} was removed")
            if ctx.kernel is None or not ctx.kernel.alive:
                kernel = Kernel(self.sandbox, f"{ctx.id}.{next(self._kernel_numbers)}", ctx.language, ctx.cwd,
                                on_exit=lambda k: self._on_exit(ctx, k))
                ctx.kernel = kernel
                try:
                    await kernel.start()
                except BaseException:
                    ctx.kernel = None  # the next execution tries again
                    await kernel.shutdown(*REMOVED)
                    raise
                ctx.env = dict(kernel.env) if ctx.language.process_env else {}
            return ctx.kernel

    def _on_exit(self, ctx: Context, kernel: Kernel) -> None:
        # A kernel that worked and then died on its own is replaced right away; one that never
        # answered is left dead, so that a broken kernel is not restarted in a loop.
        if kernel.expected_exit or not kernel.ready or ctx.kernel is not kernel or ctx.id not in self.contexts:
            return
        self.spawn(self._replace(ctx))

    async def _replace(self, ctx: Context) -> None:
        try:
            kernel = await self._ensure_kernel(ctx)
            await kernel.wait_ready()
        except Exception as exc:
            log.warning("could not restart the kernel of context %s: %s", ctx.id, exc)

    async def _discard(self, ctx: Context, error: tuple[str, str]) -> None:
        self.contexts.pop(ctx.id, None)
        if self.defaults.get(ctx.language.name) == ctx.id:
            del self.defaults[ctx.language.name]
        kernel, ctx.kernel = ctx.kernel, None
        if kernel is not None:
            await kernel.shutdown(*error)

    def spawn(self, coro: object) -> asyncio.Future[object]:
        """Run a coroutine in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


def _resolve_cwd(sandbox: Sandbox, cwd: str | None) -> str:
    if not cwd:
        return default_cwd(sandbox)
    try:
        directory = sandbox.default_account().resolve(cwd)
    except LookupError:
        directory = os.path.normpath(cwd)
    if not os.path.isdir(directory):
        raise InvalidCwdError(f"the working directory '{directory}' does not exist in the sandbox")
    return directory
