"""One Jupyter kernel process: started as the sandbox user, watched, interrupted, killed.

A kernel runs the sandbox's own interpreter (the template's /usr/bin/python3, deno, bash) as the
default user in its own session, so that one signal reaches it and everything it started. The agent
notices its exit at once (it is the agent's child) and fails whatever was waiting on it.

Readiness is checked the cheap way: kernel_info requests until one is answered and the iopub
subscription has delivered a message (a subscriber that connects late misses outputs otherwise).
jupyter_client's `wait_for_ready` does the same with polling that costs 200 ms or more.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2b_local.interpreter.connection import ConnectionInfo
from e2b_local.interpreter.forking import ForkedProcess
from e2b_local.interpreter.languages import KernelSpec, Language
from e2b_local.interpreter.sandbox import Sandbox
from e2b_local.protocol import KERNELS_ROOT as KERNELS_MOUNT
from e2b_local.protocol import RUN_MOUNT

if TYPE_CHECKING:
    from e2b_local.interpreter.client import KernelClient

log = logging.getLogger("e2b_local.interpreter")

# Private per-kernel directories (connection file, socket files), inside the sandbox.
KERNELS_ROOT = Path(KERNELS_MOUNT)
# Kernel processes' own stdout/stderr (not the user's outputs, which travel over iopub); the agent's
# run directory is visible from the host, next to agent.log.
LOG_ROOT = Path(RUN_MOUNT) / "kernels"
# Outputs of one execution that may wait for its reader before the kernel is held, and the level
# at which it runs again.
HOLD_BYTES = 8 << 20
RELEASE_BYTES = 2 << 20
# How long a kernel may take to answer its first request (a cold Python start takes about a second).
START_TIMEOUT = 60.0
# After a kernel answered kernel_info, how long to wait for an iopub message before asking again.
IOPUB_PROBE_SECONDS = 0.05


class KernelDiedError(RuntimeError):
    """The kernel process exited (or was killed) before answering."""


class KernelExit:
    """Queued to every execution in flight when the kernel process ends: the error it reports."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message


# What an execution reports when its kernel dies on its own (E2B reports a restarted context too).
DIED_ERROR = "ContextRestarting"


def describe_exit(returncode: int) -> str:
    """A human explanation of a kernel's exit status, for the error an execution reports."""
    if returncode >= 0:
        what = f"The kernel exited with code {returncode}"
    else:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        what = f"The kernel was killed by {name}"
        if -returncode == signal.SIGKILL:
            what += " (usually because the sandbox ran out of memory)"
    return what + "; the context restarts with a fresh kernel and its previous state is lost"


def output_size(msg: dict[str, Any]) -> int:
    """About how many bytes an iopub message's outputs take (its text and display data)."""
    content = msg.get("content") or {}
    size = len(content.get("text") or "")
    for value in (content.get("data") or {}).values():
        size += len(value) if isinstance(value, str | bytes) else 64
    return size + sum(len(line) for line in content.get("traceback") or [])


class Submission:
    """Requests sent to the kernel's shell channel whose iopub messages share one queue.

    Usually one request; a follow-up can join it (`Kernel.submit(..., into=...)`) when its messages
    belong to the same execution, like the fence that flushes Deno's late output.

    The queue is bounded the way a pipe is: past HOLD_BYTES of outputs nobody has taken yet, the
    kernel is held (stopped) until the reader has caught up to RELEASE_BYTES, so a client that stalls
    slows the code down rather than growing the agent.
    """

    def __init__(self, kernel: Kernel, msg_id: str) -> None:
        self.kernel = kernel
        self.msg_id = msg_id
        self.msg_ids = [msg_id]
        self.queue: asyncio.Queue[dict[str, Any] | KernelExit | object] = asyncio.Queue()
        self.pending = 0
        self.holding = False

    def put(self, item: dict[str, Any] | KernelExit | object) -> None:
        """Queue an item for the reader (holding the kernel when too much waits)."""
        self.queue.put_nowait(item)
        if isinstance(item, dict):
            self.pending += output_size(item)
            if self.pending > HOLD_BYTES and not self.holding:
                self.holding = True
                self.kernel.hold()

    async def get(self) -> dict[str, Any] | KernelExit | object:
        """The next item, once there is one."""
        return self._taken(await self.queue.get())

    def get_nowait(self) -> dict[str, Any] | KernelExit | object:
        """The next item; raises asyncio.QueueEmpty when there is none."""
        return self._taken(self.queue.get_nowait())

    def empty(self) -> bool:
        return self.queue.empty()

    def _taken(self, item: dict[str, Any] | KernelExit | object) -> dict[str, Any] | KernelExit | object:
        if isinstance(item, dict):
            self.pending -= output_size(item)
            if self.holding and self.pending < RELEASE_BYTES:
                self._let_go()
        return item

    def _let_go(self) -> None:
        self.holding = False
        self.kernel.release()

    def close(self) -> None:
        """Stop routing messages to this submission (and stop holding the kernel for it)."""
        for msg_id in self.msg_ids:
            self.kernel.waiters.pop(msg_id, None)
        if self.holding:
            self._let_go()


class Kernel:
    """A kernel process and the client connected to it."""

    def __init__(self, sandbox: Sandbox, kernel_id: str, language: Language, cwd: str,
                 on_exit: Callable[[Kernel], None] | None = None) -> None:
        self.sandbox = sandbox
        self.id = kernel_id
        self.language = language
        self.cwd = cwd
        self.on_exit = on_exit
        self.spec = KernelSpec.load(language.kernel)
        self.env: dict[str, str] = {}
        self.proc: asyncio.subprocess.Process | ForkedProcess | None = None
        self.client: KernelClient | None = None
        self.waiters: dict[str, Submission] = {}
        self.ready = False
        self.death: str | None = None
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._iopub_seen = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._exited = asyncio.Event()
        # Set once the process is started (or could not be): see ContextManager.prestart.
        self.spawned = asyncio.Event()
        self._kill_error: tuple[str, str] | None = None
        self._directory = KERNELS_ROOT / kernel_id
        self._holds = 0

    # -- start -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn the process and connect to it; `wait_ready` tells when it answers."""
        user = self.sandbox.default_account()
        self._directory.mkdir(parents=True, mode=0o700)
        os.chown(self._directory, user.uid, user.gid)
        info = ConnectionInfo.new(self.language.transport, str(self._directory))
        connection_file = self._directory / "connection.json"
        connection_file.write_text(info.to_json(self.spec.name))
        os.chown(connection_file, user.uid, user.gid)
        connection_file.chmod(0o600)
        self.env = self.sandbox.sandbox_env()
        env = {
            **user.base_env(), "SHELL": "/bin/bash", "LANG": "C.UTF-8",
            # ipykernel exits by itself when this process (its parent) goes away.
            "JPY_PARENT_PID": str(os.getpid()),
            **self.spec.env, **self.env,
        }
        argv = [arg.replace("{connection_file}", str(connection_file)) for arg in self.spec.argv]
        LOG_ROOT.mkdir(parents=True, exist_ok=True)
        forker = self.sandbox.kernel_forker()
        try:
            with open(LOG_ROOT / f"{self.id}.log", "ab") as log_file:
                if forker.can_fork(argv):
                    try:
                        self.proc = await forker.spawn(argv, env, self.cwd, user.uid, user.gid, list(user.groups),
                                                       log_file.fileno())
                    except OSError as exc:
                        log.warning("kernel %s: forking failed, starting it afresh: %s", self.id, exc)
                if self.proc is None:
                    self.proc = await asyncio.create_subprocess_exec(
                        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file, cwd=self.cwd,
                        env=env, user=user.uid, group=user.gid, extra_groups=list(user.groups),
                        start_new_session=True, preexec_fn=self.sandbox.become_workload,
                    )
        finally:
            self.spawned.set()
        self._watcher = asyncio.create_task(self._watch())
        # ZeroMQ takes a noticeable time to import the first time: do it while the kernel boots, off
        # the event loop.
        module = await asyncio.to_thread(importlib.import_module, "e2b_local.interpreter.client")
        if self.death is not None:
            return
        self.client = module.KernelClient(info, self._on_iopub, self._on_reply)
        self._handshake = asyncio.create_task(self._wait_answering())
        # Nobody may be waiting when a kernel dies during its start: consume the error here.
        self._handshake.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Return once the kernel answers requests and its outputs reach us; raise if it died."""
        if self.ready:
            return
        timeout = max(timeout, self.language.start_timeout or 0.0)
        if self.death is not None or self._handshake is None:
            raise KernelDiedError(self.death or "the kernel is not running")
        try:
            await asyncio.wait_for(asyncio.shield(self._handshake), timeout)
        except TimeoutError:
            raise KernelDiedError(f"the kernel did not answer within {timeout:.0f} s") from None

    async def _wait_answering(self) -> None:
        assert self.client is not None
        while True:
            await self.request(self.client.shell, "kernel_info_request")
            if self._iopub_seen.is_set():
                break
            # The kernel answers but our subscription may not be connected yet: the status messages
            # of the next request will show when it is.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._iopub_seen.wait(), IOPUB_PROBE_SECONDS)
                break
        self.ready = True

    async def request(self, sock: Any, msg_type: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and wait for its reply (raises KernelDiedError if the kernel dies first)."""
        assert self.client is not None
        if self.death is not None:
            raise KernelDiedError(self.death)
        msg_id = self.client.send(sock, msg_type, content or {})
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[msg_id] = future
        try:
            return await future
        finally:
            self._replies.pop(msg_id, None)

    # -- executions --------------------------------------------------------------------------------
    def submit(self, code: str, *, silent: bool = False, into: Submission | None = None) -> Submission:
        """Send an execute_request; its iopub messages arrive on the returned submission's queue.

        With `into`, the request joins that submission (its messages go to the same queue).
        """
        assert self.client is not None
        content = {"code": code, "silent": silent, "store_history": not silent, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": not silent}
        msg_id, frames = self.client.message("execute_request", content)
        if into is None:
            submission = Submission(self, msg_id)
        else:
            submission = into
            submission.msg_ids.append(msg_id)
        if self.death is not None:
            submission.put(KernelExit(DIED_ERROR, self.death))
            return submission
        self.waiters[msg_id] = submission
        self.client.send_frames(self.client.shell, frames)
        return submission

    def hold(self) -> None:
        """Stop the kernel and what it started (its process group) until every hold is released."""
        self._holds += 1
        if self._holds == 1:
            self._signal_group(signal.SIGSTOP)

    def release(self) -> None:
        """Give back one hold; the kernel runs again when none is left."""
        self._holds = max(self._holds - 1, 0)
        if self._holds == 0:
            self._signal_group(signal.SIGCONT)

    def _signal_group(self, signum: int) -> None:
        if self.proc is not None and self.death is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signum)

    def interrupt(self) -> None:
        """Interrupt the running code the way the kernel's spec asks for."""
        if self.death is not None or self.proc is None:
            return
        if self.spec.interrupt_mode == "message" and self.client is not None:
            self.client.send(self.client.control, "interrupt_request", {})
            return
        # The whole process group: Python's KeyboardInterrupt, and the programs it or Bash started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGINT)

    async def shutdown(self, error_name: str, message: str) -> None:
        """Kill the kernel and everything in its process group; waits until it is gone.

        Executions in flight end with an error named `error_name` saying `message`.
        """
        if self.proc is None:  # it never started
            self.death = self.death or message
            shutil.rmtree(self._directory, ignore_errors=True)
            return
        if self.death is None:
            self._kill_error = (error_name, message)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        await self._exited.wait()

    @property
    def alive(self) -> bool:
        """True until the process has exited."""
        return self.death is None

    def process_exited(self) -> bool:
        """True when the kernel's process is gone or a zombie, even before its exit has been handled."""
        if self.proc is None:
            return False
        # Without reaping it (WNOWAIT): that is the child watcher's. The kernel is the agent's child,
        # started by it or, forked, reparented to it (the sandbox's pid 1).
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    async def wait_exited(self) -> None:
        """Wait until the kernel's exit has been handled (its executions told, `alive` False)."""
        await self._exited.wait()

    @property
    def expected_exit(self) -> bool:
        """True when the agent killed the kernel on purpose (restart, removal)."""
        return self._kill_error is not None

    # -- background tasks --------------------------------------------------------------------------
    def _on_iopub(self, msg: dict[str, Any]) -> None:
        self._iopub_seen.set()
        waiter = self.waiters.get(msg["parent_header"].get("msg_id"))
        if waiter is not None:
            waiter.put(msg)

    def _on_reply(self, msg: dict[str, Any]) -> None:
        future = self._replies.get(msg["parent_header"].get("msg_id"))
        if future is not None and not future.done():
            future.set_result(msg)

    async def _watch(self) -> None:
        assert self.proc is not None
        returncode = await self.proc.wait()
        name, self.death = self._kill_error or (DIED_ERROR, describe_exit(returncode))
        if self._kill_error is None:
            log.warning("kernel %s (%s): %s", self.id, self.language.name, self.death)
        for submission in list(self.waiters.values()):
            submission.put(KernelExit(name, self.death))
        self.waiters.clear()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(KernelDiedError(self.death))
        if self.client is not None:
            self.client.close()
        shutil.rmtree(self._directory, ignore_errors=True)
        self._exited.set()
        if self.on_exit is not None:
            self.on_exit(self)
