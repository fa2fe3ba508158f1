"""A sandbox's top process, held by a pidfd rather than known by its pid.

A recorded pid names whatever process has that number now: once the sandbox's process has died and
been reaped, an unrelated process may get it. A pidfd names one process for good: signals through it
reach that process or fail, and it becomes readable when that process exits (so the event loop can
watch it). A pid is only turned into a pidfd after checking that the process belongs to the sandbox's
cgroup, checked again once the pidfd holds it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterator

from e2b_local.isolation.cgroups import PARENT


def in_sandbox_cgroup(pid: int, key: str) -> bool:
    """Whether process `pid` is in the cgroup (any hierarchy) of the sandbox `key`."""
    own = f"/{PARENT}/{key}"
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            paths = [line.rstrip("\n").split(":", 2)[2] for line in f if line.count(":") >= 2]
    except (OSError, IndexError):
        return False
    return any(path == own or path.startswith(own + "/") for path in paths)


class TrackedProcess:
    """One process, held open by a pidfd until `close`."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.fd = pidfd

    @classmethod
    def adopt(cls, pid: int, key: str) -> TrackedProcess | None:
        """Hold `pid` if it is a live process of the sandbox `key`'s cgroup; None otherwise."""
        if pid <= 0 or not in_sandbox_cgroup(pid, key):
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        tracked = cls(pid, pidfd)
        # The pid may have changed hands between the check and the open; while the pidfd's process
        # lives, the pid is its own, so a check now and a live process afterwards settle it.
        if not in_sandbox_cgroup(pid, key) or not tracked.alive():
            tracked.close()
            return None
        return tracked

    def alive(self) -> bool:
        """True until the process has exited (a pidfd turns readable then)."""
        if self.fd < 0:
            return False
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return not poller.poll(0)

    def send_signal(self, signum: int) -> bool:
        """Signal the process; False when it has exited."""
        try:
            signal.pidfd_send_signal(self.fd, signum)
        except ProcessLookupError:
            return False
        return True

    @contextlib.contextmanager
    def namespace(self, kind: str) -> Iterator[int]:
        """A descriptor of the process's namespace of `kind` ("net", ...), open inside the block.

        Opened while the process was known to be alive: never a namespace of a later owner of its pid.
        A child process reaches it as /proc/self/fd/N when given it with `pass_fds`.
        """
        fd = os.open(f"/proc/{self.pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if not self.alive():
                raise ProcessLookupError(f"process {self.pid} has exited")
            yield fd
        finally:
            os.close(fd)

    def close(self) -> None:
        """Release the pidfd."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
