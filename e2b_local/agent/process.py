"""envd's `process.Process` service: start, attach to, feed and signal processes in the sandbox.

A process belongs to the sandbox, not to the request that started it: output is broadcast to every
attached stream, a client that disconnects leaves it running, and `Connect` re-attaches. The only
deadline is the `Start` call's Connect timeout, which envd treats as the process's lifetime.

Output flows as through a pipe: each attached stream has a small buffer, bounded in bytes, and the
process's stdout, stderr or terminal is not read while the fullest of them has no room, so a slow
reader slows the writer (its pipe fills and its writes block) instead of the agent buffering without
limit. Output waiting for a slow reader is merged into fewer, larger events, each at most the size
envd reads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from e2b.envd.process import process_pb as pb
from e2b.envd.process.process_connect import Process
from protobuf import Oneof

from e2b_local.agent.connect import request_user
from e2b_local.agent.journal import Journal
from e2b_local.agent.state import SandboxState
from e2b_local.agent.users import Accounts, User
from e2b_local.agent.workload import Workload

# envd reads at most this much output per event (32 KiB for pipes, 16 KiB for a terminal).
PIPE_CHUNK = 32 * 1024
PTY_CHUNK = 16 * 1024
# Output an attached stream may have waiting before the process is no longer read: this bounds the
# agent's memory per stream, while the proxy's and the sockets' own buffers keep the stream busy.
SUBSCRIBER_BYTES = 512 * 1024
# After a terminal's process exits, how long its terminal may stay silent before reading stops (a
# background child may hold it open for ever).
PTY_DRAIN_SECONDS = 0.2
# Sent on an otherwise silent stream, so that idle-connection timeouts along the way never fire.
KEEPALIVE_SECONDS = 50


class _Output:
    """Output of one stream (stdout, stderr or pty) waiting to be sent as one data event."""

    __slots__ = ("data", "limit", "name")

    def __init__(self, name: str, data: bytes, limit: int) -> None:
        self.name = name
        self.data = bytearray(data)
        self.limit = limit

    def event(self) -> pb.ProcessEvent:
        return _event("data", pb.ProcessEvent.DataEvent(output=Oneof(self.name, bytes(self.data))))


class Subscription:
    """The events waiting for one attached stream, with room for `SUBSCRIBER_BYTES` of output."""

    def __init__(self) -> None:
        self._events: deque[_Output | pb.ProcessEvent | None] = deque()
        self.size = 0
        self.closed = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def put_output(self, name: str, data: bytes, limit: int) -> None:
        """Queue output, first waiting while the stream has no room; merged into the last event
        when that is output of the same stream with room left."""
        while self.size >= SUBSCRIBER_BYTES and not self.closed:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            return
        last = self._events[-1] if self._events else None
        if isinstance(last, _Output) and last.name == name and len(last.data) + len(data) <= last.limit:
            last.data += data
        else:
            self._events.append(_Output(name, data, limit))
        self.size += len(data)
        self._ready.set()

    def put(self, event: pb.ProcessEvent | None) -> None:
        """Queue an event that is not output (the end, or None for the stream's close) at once."""
        if not self.closed:
            self._events.append(event)
            self._ready.set()

    async def get(self) -> pb.ProcessEvent | None:
        """The next event, waiting for one."""
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        item = self._events.popleft()
        if isinstance(item, _Output):
            self.size -= len(item.data)
            if self.size < SUBSCRIBER_BYTES:
                self._room.set()
            return item.event()
        return item

    def close(self) -> None:
        """Drop what is waiting and release a publisher waiting for room."""
        self.closed = True
        self._events.clear()
        self.size = 0
        self._room.set()


@dataclass
class ManagedProcess:
    """A process started through `Start`, with everyone currently attached to its output."""

    pid: int
    config: pb.ProcessConfig
    tag: str | None
    proc: asyncio.subprocess.Process
    pty_master: int | None = None
    subscribers: set[Subscription] = field(default_factory=set)
    end: pb.ProcessEvent | None = None
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    waiter: asyncio.Task[None] | None = None
    deadline: asyncio.TimerHandle | None = None
    timed_out: bool = False
    # Chunks read from the terminal, and publications waiting for room: how `_wait` tells a terminal
    # that still has output from one that went quiet.
    reads: int = 0
    publishing: int = 0

    async def publish_output(self, name: str, data: bytes, limit: int) -> None:
        """Hand output to every attached stream, waiting while any of them is full."""
        self.publishing += 1
        try:
            for subscription in list(self.subscribers):
                await subscription.put_output(name, data, limit)
        finally:
            self.publishing -= 1

    def publish(self, event: pb.ProcessEvent | None) -> None:
        """Hand an event that is not output to every attached stream."""
        for subscription in self.subscribers:
            subscription.put(event)

    def subscribe(self) -> Subscription:
        """Attach a stream: it gets every event published from now on."""
        subscription = Subscription()
        self.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Detach a stream; what it had not taken is dropped, so it holds no publisher back."""
        self.subscribers.discard(subscription)
        subscription.close()

    def signal(self, signum: int) -> None:
        # The whole process group, so that what a shell started goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


def _event(name: str, value: object) -> pb.ProcessEvent:
    return pb.ProcessEvent(event=Oneof(name, value))


def _end_event(returncode: int) -> pb.ProcessEvent:
    if returncode >= 0:
        status = f"exit status {returncode}"
        end = pb.ProcessEvent.EndEvent(exit_code=returncode, exited=True, status=status,
                                       error=status if returncode else None)
    else:
        name = signal.Signals(-returncode).name.removeprefix("SIG").lower()
        status = f"signal: {'killed' if name == 'kill' else name}"
        end = pb.ProcessEvent.EndEvent(exit_code=-1, exited=False, status=status, error=status)
    return _event("end", end)


async def _readable(fd: int) -> None:
    """Wait until `fd` can be read; the watch is removed at once, so that while the reader waits
    for a slow subscriber, unread data does not wake the loop over and over."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows or 24, cols or 80, 0, 0))


class ProcessService(Process):
    """The service; one instance per agent."""

    def __init__(self, state: SandboxState, accounts: Accounts, workload: Workload,
                 journal: Journal | None = None) -> None:
        self.state = state
        self.accounts = accounts
        self.workload = workload
        self.journal = journal if journal is not None else Journal()
        self.processes: dict[int, ManagedProcess] = {}

    # -- helpers -----------------------------------------------------------------------------------
    def _find(self, selector: pb.ProcessSelector | None) -> ManagedProcess:
        chosen = selector.selector if selector else None
        if isinstance(chosen, Oneof) and chosen.field == "pid":
            found = self.processes.get(int(chosen.value))
            if found:
                return found
            raise ConnectError(Code.NOT_FOUND, f"process with pid {chosen.value} not found")
        if isinstance(chosen, Oneof) and chosen.field == "tag":
            for managed in self.processes.values():
                if managed.tag == chosen.value:
                    return managed
            raise ConnectError(Code.NOT_FOUND, f"process with tag {chosen.value} not found")
        raise ConnectError(Code.INVALID_ARGUMENT, "a process selector (pid or tag) is required")

    async def _spawn(self, request: pb.StartRequest, user: User, timeout_ms: float | None) -> ManagedProcess:
        config = request.process or pb.ProcessConfig()
        if not config.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd is required")
        cwd = user.resolve(config.cwd if config.cwd else None)
        if not os.path.isdir(cwd):
            raise ConnectError(Code.INVALID_ARGUMENT, f"cwd '{cwd}' does not exist")
        env = {**user.base_env(), **self.state.sandbox_env(), **dict(config.envs)}
        enter_workload = self.workload.enter
        pty = request.pty
        master: int | None = None
        if pty is not None:
            master, slave = os.openpty()
            size = pty.size or pb.PTY.Size(cols=80, rows=24)
            _set_winsize(slave, size.cols, size.rows)
            os.fchown(slave, user.uid, user.gid)
            stdin = stdout = stderr = slave
            terminal = True
        else:
            slave = None
            wants_stdin = request.stdin if request.stdin is not None else True
            stdin = asyncio.subprocess.PIPE if wants_stdin else asyncio.subprocess.DEVNULL
            stdout = stderr = asyncio.subprocess.PIPE
            terminal = False

        def prepare_child() -> None:
            # In the child, in this order: the cgroup needs root, the terminal needs the new session.
            enter_workload()
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)
            if terminal:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            proc = await asyncio.create_subprocess_exec(
                config.cmd, *config.args, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env,
                start_new_session=True, preexec_fn=prepare_child,
            )
        except (FileNotFoundError, PermissionError) as exc:
            if master is not None:
                os.close(master)
            raise ConnectError(Code.INVALID_ARGUMENT, f"failed to start '{config.cmd}': {exc}") from None
        finally:
            if slave is not None:
                os.close(slave)
        managed = ManagedProcess(pid=proc.pid, config=config, tag=request.tag, proc=proc, pty_master=master)
        if timeout_ms:
            loop = asyncio.get_running_loop()
            managed.deadline = loop.call_later(timeout_ms / 1000, self._expire, managed)
        self.processes[proc.pid] = managed
        self.journal.process_started(proc.pid, config.cmd, list(config.args), user.name, request.tag)
        return managed

    @staticmethod
    def _expire(managed: ManagedProcess) -> None:
        managed.timed_out = True
        managed.signal(signal.SIGKILL)

    def _watch(self, managed: ManagedProcess) -> None:
        """Start forwarding output and the exit of `managed` to its subscribers."""
        tasks: list[asyncio.Task[None]] = []
        if managed.pty_master is not None:
            tasks.append(asyncio.create_task(self._read_pty(managed)))
        else:
            assert managed.proc.stdout and managed.proc.stderr
            tasks.append(asyncio.create_task(self._read_pipe(managed, managed.proc.stdout, "stdout")))
            tasks.append(asyncio.create_task(self._read_pipe(managed, managed.proc.stderr, "stderr")))
        managed.readers = tasks
        managed.waiter = asyncio.create_task(self._wait(managed))

    async def _read_pipe(self, managed: ManagedProcess, stream: asyncio.StreamReader, name: str) -> None:
        # Not reading while `publish` waits leaves the data in the pipe: the stream reader stops
        # reading at its limit, the pipe fills, and the process blocks in write().
        while chunk := await stream.read(PIPE_CHUNK):
            self.journal.process_output(managed.pid, name, chunk)
            await managed.publish_output(name, chunk, PIPE_CHUNK)

    async def _read_pty(self, managed: ManagedProcess) -> None:
        assert managed.pty_master is not None
        fd = managed.pty_master
        os.set_blocking(fd, False)
        while True:
            try:
                chunk = os.read(fd, PTY_CHUNK)
            except BlockingIOError:
                await _readable(fd)
                continue
            except OSError:  # EIO: every slave end is closed
                return
            if not chunk:
                return
            managed.reads += 1
            await managed.publish_output("pty", chunk, PTY_CHUNK)

    async def _wait(self, managed: ManagedProcess) -> None:
        returncode = await managed.proc.wait()
        if managed.pty_master is not None:
            # The terminal may still hold output: read on while it comes or waits for a slow reader,
            # and stop once it has been quiet for a moment.
            while True:
                reads = managed.reads
                _, pending = await asyncio.wait(managed.readers, timeout=PTY_DRAIN_SECONDS)
                if not pending or (managed.reads == reads and not managed.publishing):
                    break
            for task in managed.readers:
                task.cancel()
            await asyncio.gather(*managed.readers, return_exceptions=True)
            with contextlib.suppress(OSError):
                os.close(managed.pty_master)
        else:
            await asyncio.gather(*managed.readers, return_exceptions=True)
        if managed.deadline:
            managed.deadline.cancel()
        managed.end = _end_event(returncode)
        self.processes.pop(managed.pid, None)
        self.journal.process_ended(managed.pid, " ".join([managed.config.cmd, *managed.config.args]), returncode)
        managed.publish(managed.end)
        managed.publish(None)

    async def _stream(self, managed: ManagedProcess, subscription: Subscription,
                      wrap: type[pb.StartResponse] | type[pb.ConnectResponse], owner: bool = False) -> AsyncIterator:
        try:
            yield wrap(event=_event("start", pb.ProcessEvent.StartEvent(pid=managed.pid)))
            while True:
                try:
                    event = await asyncio.wait_for(subscription.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield wrap(event=_event("keepalive", pb.ProcessEvent.KeepAlive()))
                    continue
                if event is None:
                    return
                if owner and managed.timed_out and event is managed.end:
                    # As envd: the caller's deadline ended the process, so its call ends with that error.
                    raise ConnectError(Code.DEADLINE_EXCEEDED, "the process was killed when its timeout expired")
                yield wrap(event=event)
        finally:
            managed.unsubscribe(subscription)

    # -- RPCs --------------------------------------------------------------------------------------
    async def start(self, request: pb.StartRequest, ctx: RequestContext) -> AsyncIterator[pb.StartResponse]:
        user = request_user(self.accounts, ctx)
        managed = await self._spawn(request, user, ctx.timeout_ms)
        subscription = managed.subscribe()
        self._watch(managed)
        async for message in self._stream(managed, subscription, pb.StartResponse, owner=True):
            yield message

    async def connect(self, request: pb.ConnectRequest, ctx: RequestContext) -> AsyncIterator[pb.ConnectResponse]:
        managed = self._find(request.process)
        subscription = managed.subscribe()
        async for message in self._stream(managed, subscription, pb.ConnectResponse):
            yield message

    async def list(self, request: pb.ListRequest, ctx: RequestContext) -> pb.ListResponse:
        return pb.ListResponse(processes=[
            pb.ProcessInfo(config=m.config, pid=m.pid, tag=m.tag) for m in self.processes.values()
        ])

    def _write_input(self, managed: ManagedProcess, data: pb.ProcessInput | None) -> None:
        chosen = data.input if data else None
        if not isinstance(chosen, Oneof):
            return
        if chosen.field == "pty":
            if managed.pty_master is None:
                raise ConnectError(Code.FAILED_PRECONDITION, "the process has no terminal")
            os.write(managed.pty_master, chosen.value)
            return
        stdin = managed.proc.stdin
        if stdin is None or stdin.is_closing():
            raise ConnectError(Code.INTERNAL, "stdin not enabled or closed")
        stdin.write(chosen.value)

    async def send_input(self, request: pb.SendInputRequest, ctx: RequestContext) -> pb.SendInputResponse:
        managed = self._find(request.process)
        self._write_input(managed, request.input)
        if managed.proc.stdin is not None and request.input and request.input.input.field == "stdin":
            with contextlib.suppress(ConnectionError):
                await managed.proc.stdin.drain()
        return pb.SendInputResponse()

    async def stream_input(self, request: AsyncIterator[pb.StreamInputRequest],
                           ctx: RequestContext) -> pb.StreamInputResponse:
        managed: ManagedProcess | None = None
        async for message in request:
            event = message.event
            if not isinstance(event, Oneof):
                continue
            if event.field == "start":
                managed = self._find(event.value.process)
            elif event.field == "data":
                if managed is None:
                    raise ConnectError(Code.FAILED_PRECONDITION, "the first message must select the process")
                self._write_input(managed, event.value.input)
        return pb.StreamInputResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: RequestContext) -> pb.CloseStdinResponse:
        managed = self._find(request.process)
        if managed.proc.stdin is None:
            raise ConnectError(Code.FAILED_PRECONDITION, "stdin is not enabled for this process")
        managed.proc.stdin.close()
        return pb.CloseStdinResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: RequestContext) -> pb.SendSignalResponse:
        managed = self._find(request.process)
        signum = {pb.Signal.SIGTERM: signal.SIGTERM, pb.Signal.SIGKILL: signal.SIGKILL}.get(request.signal)
        if signum is None:
            raise ConnectError(Code.INVALID_ARGUMENT, "signal must be SIGTERM or SIGKILL")
        managed.signal(signum)
        return pb.SendSignalResponse()

    async def update(self, request: pb.UpdateRequest, ctx: RequestContext) -> pb.UpdateResponse:
        managed = self._find(request.process)
        if request.pty is not None and request.pty.size is not None:
            if managed.pty_master is None:
                raise ConnectError(Code.FAILED_PRECONDITION, "the process has no terminal")
            _set_winsize(managed.pty_master, request.pty.size.cols, request.pty.size.rows)
        return pb.UpdateResponse()
