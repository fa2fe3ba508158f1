"""What both zygotes do the same way: their request socket, collecting their forks, a fork's answers."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import traceback
from typing import NoReturn

from e2b_local import linux
from e2b_local.protocol import ZYGOTE_FD_VARIABLE, ZYGOTE_MERGE_VARIABLE


def request_socket() -> socket.socket:
    """The zygote's request socket, taken from the environment once (nothing it forks inherits it)."""
    requests = socket.socket(fileno=int(os.environ.pop(ZYGOTE_FD_VARIABLE)))
    requests.set_inheritable(False)
    return requests


def merge_asked() -> bool:
    """Whether the server merges sandboxes' identical pages (read once, as the zygote starts)."""
    return os.environ.pop(ZYGOTE_MERGE_VARIABLE, "") == "1"


def let_merge() -> None:
    """Let KSM merge the memory a fork inherited; called once it is in its sandbox, whose /proc it reads.

    Forks' copies of their zygote's pages are mostly identical from sandbox to sandbox (reference
    counts and caches written at the same places): merged, each sandbox keeps only what differs.
    """
    try:
        linux.mark_mergeable()
    except OSError as exc:
        # A kernel without KSM: the fork runs all the same, unmerged.
        print(f"e2b-local: memory stays unmerged: {exc}", file=sys.stderr, flush=True)


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
