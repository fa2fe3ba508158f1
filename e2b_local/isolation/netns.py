"""Sockets in a sandbox's network namespace, for the host to reach a port inside the sandbox.

The socket is created in the sandbox's namespace by the calling thread, which enters it and returns
to its own at once; the socket stays in the sandbox's namespace, where it connects to the sandbox's
loopback like a local client. Nothing about the sandbox's own reach changes: it still cannot open
any connection to the host.
"""

from __future__ import annotations

import os
import socket

from e2b_local.linux import CLONE_NEWNET, setns

# The namespace this process serves from, held open so that every thread can return to it.
_HOME_NETNS = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def socket_in(pidfd: int) -> socket.socket:
    """A non-blocking TCP socket in the network namespace of the process `pidfd` refers to."""
    setns(pidfd, CLONE_NEWNET)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    finally:
        setns(_HOME_NETNS, CLONE_NEWNET)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
