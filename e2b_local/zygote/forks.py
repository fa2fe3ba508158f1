"""What both zygotes do the same way: their request socket, collecting their forks, a fork's answers."""

from __future__ import annotations

import contextlib
import os
import socket
import traceback
from typing import NoReturn

from e2b_local.protocol import ZYGOTE_FD_VARIABLE


def request_socket() -> socket.socket:
    """The zygote's request socket, taken from the environment once (nothing it forks inherits it)."""
    requests = socket.socket(fileno=int(os.environ.pop(ZYGOTE_FD_VARIABLE)))
    requests.set_inheritable(False)
    return requests


def reap(*_: object) -> list[int]:
    """Collect every fork that has exited; their pids (a SIGCHLD handler too: forks exit once they have answered)."""
    found = []
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        found.append(pid)


def read_all(fd: int) -> bytes:
    """The whole content of the file `fd` refers to (a memfd, a seccomp filter), from its start."""
    chunks = []
    while chunk := os.pread(fd, 65536, sum(len(c) for c in chunks)):
        chunks.append(chunk)
    return b"".join(chunks)


def fail(answer: int, exc: BaseException) -> NoReturn:
    """End a fork that could not do its work, telling `answer` why (and the log, with the traceback)."""
    with contextlib.suppress(OSError):
        os.write(answer, f"error {type(exc).__name__}: {exc}".encode())
    traceback.print_exc()
    os._exit(1)
