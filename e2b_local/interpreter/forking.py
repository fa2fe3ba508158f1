"""Python kernels forked from the template's kernel zygote instead of executed (see e2b_local/zygote/kernels.py).

The agent's channel to the zygote was registered with the sandbox's namespaces before the agent
started, so a request can only ever start a kernel in this sandbox. A forked kernel is a child of
the agent like an executed one: it is waited for, signalled and killed the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import warnings

from e2b_local.protocol import KERNELS_FD_VARIABLE


class ForkedProcess:
    """A forked kernel's process, with the parts of asyncio.subprocess.Process that kernels use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            watcher = asyncio.get_child_watcher()
        watcher.add_child_handler(pid, self._on_exit)

    def _on_exit(self, pid: int, returncode: int) -> None:
        self.returncode = returncode
        if not self._exited.done():
            self._exited.set_result(returncode)

    async def wait(self) -> int:
        """The exit status, once the process has exited."""
        return await asyncio.shield(self._exited)


class KernelForker:
    """The agent's channel to the kernel zygote."""

    def __init__(self, channel: socket.socket | None) -> None:
        self.channel = channel
        self._lock = asyncio.Lock()

    @classmethod
    def take(cls) -> KernelForker:
        """Take the channel from the environment, once, at the agent's start (no child inherits it)."""
        value = os.environ.pop(KERNELS_FD_VARIABLE, None)
        if value is None:
            return cls(None)
        channel = socket.socket(fileno=int(value))
        channel.set_inheritable(False)
        return cls(channel)

    def can_fork(self, argv: list[str]) -> bool:
        """Whether this kernel may be forked: a `python -m` kernel (the zygote checks the rest, and
        refuses an environment that would have acted at the kernel's start)."""
        return self.channel is not None and len(argv) >= 3 and argv[1] == "-m"

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str, uid: int, gid: int,
                    groups: list[int], log: int) -> ForkedProcess:
        """Start the kernel `argv` as this user; its process once it runs. Raises OSError if the zygote cannot."""
        assert self.channel is not None
        request = json.dumps({"argv": argv, "env": env, "cwd": cwd, "uid": uid, "gid": gid, "groups": groups})
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours:
            try:
                async with self._lock:
                    socket.send_fds(self.channel, [request.encode()], [theirs.fileno(), log])
            finally:
                theirs.close()
            ours.setblocking(False)
            loop = asyncio.get_running_loop()
            chunks = []
            while chunk := await loop.sock_recv(ours, 4096):
                chunks.append(chunk)
        answer = b"".join(chunks).decode(errors="replace")
        if not answer.startswith("pid "):
            raise OSError(f"the kernel zygote could not start the kernel: {answer or 'no answer'}")
        return ForkedProcess(int(answer.removeprefix("pid ")))
