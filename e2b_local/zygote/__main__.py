"""Run a zygote: import the agent once, then fork for each request until the fork server goes away."""

from __future__ import annotations

import gc
import importlib
import os
import signal
import socket

from e2b_local.zygote.forks import merge_asked, reap, request_socket
from e2b_local.zygote.spawn import spawn

# A request is its descriptors; its text is only a marker (everything else comes in the spec descriptor,
# read by the fork, so that no sandbox's details ever pass through the zygote's own memory).
MAX_REQUEST = 16
MAX_FDS = 32


# What the agent imports on demand once it serves: uvicorn's protocol and lifespan modules, anyio's
# asyncio backend (Starlette's), and the kernel client (ZeroMQ). Imported here, they are shared by
# every sandbox instead of copied into each.
ON_DEMAND = ("uvicorn.lifespan.off", "uvicorn.protocols.http.httptools_impl",
             "uvicorn.protocols.websockets.auto", "anyio._backends._asyncio", "e2b_local.interpreter.client",
             "_strptime")


def preload() -> None:
    """Import everything the agent imports, so that forks share it."""
    import e2b_local.agent.__main__
    import e2b_local.agent.app  # noqa: F401

    for name in ON_DEMAND:
        importlib.import_module(name)

    # Objects that exist now are never collected: the collector's visits would write to every page
    # the forks share, and copy them into each one.
    gc.freeze()


def serve(requests: socket.socket, merge: bool) -> None:
    """Fork a sandbox's agent for each request, until the fork server's end of `requests` closes.

    `merge`: whether each agent lets KSM merge the memory it inherited (see `forks.let_merge`).
    """
    signal.signal(signal.SIGCHLD, reap)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(requests, MAX_REQUEST, MAX_FDS)
        except InterruptedError:
            continue
        except ConnectionError:
            return
        if not message:
            for fd in fds:
                os.close(fd)
            return
        if os.fork() == 0:
            requests.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            spawn(fds, merge)
        for fd in fds:
            os.close(fd)


def main() -> None:
    requests = request_socket()
    merge = merge_asked()
    preload()
    serve(requests, merge)


if __name__ == "__main__":
    main()
