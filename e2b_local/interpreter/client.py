"""A lean Jupyter client for one kernel: ZeroMQ sockets and message framing.

jupyter_client's `Session` signs and (de)serialises messages; the sockets are plain `zmq.asyncio`
ones, each read by one task of the kernel, which costs less per message than jupyter_client's
channel classes and their polling.
"""

from __future__ import annotations

from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from e2b_local.interpreter.connection import SIGNATURE_SCHEME, ConnectionInfo

# How soon a socket retries connecting to a kernel that is not listening yet (ZeroMQ's default, 100 ms,
# would add up to that much to every kernel start).
RECONNECT_MS = 5

_context: zmq.asyncio.Context | None = None


def _zmq_context() -> zmq.asyncio.Context:
    global _context
    if _context is None:
        _context = zmq.asyncio.Context()
    return _context


class KernelClient:
    """The shell, iopub and control sockets of one kernel, with signing."""

    def __init__(self, info: ConnectionInfo) -> None:
        self.session = Session(key=info.key.encode(), signature_scheme=SIGNATURE_SCHEME, username="e2b-local")
        ctx = _zmq_context()
        self.shell = self._connect(ctx, zmq.DEALER, info.url("shell"))
        self.control = self._connect(ctx, zmq.DEALER, info.url("control"))
        self.iopub = self._connect(ctx, zmq.SUB, info.url("iopub"))
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")

    @staticmethod
    def _connect(ctx: zmq.asyncio.Context, kind: int, url: str) -> zmq.asyncio.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
        sock.connect(url)
        return sock

    def send(self, sock: zmq.asyncio.Socket, msg_type: str, content: dict[str, Any]) -> str:
        """Sign and send a request; returns its message id (replies and outputs carry it as parent)."""
        msg = self.session.msg(msg_type, content)
        # A DEALER socket queues without blocking, so the send completes before this returns.
        sock.send_multipart(self.session.serialize(msg))
        return msg["header"]["msg_id"]

    async def recv(self, sock: zmq.asyncio.Socket) -> dict[str, Any]:
        """The next message on a socket, verified and parsed."""
        frames = await sock.recv_multipart(copy=False)
        _idents, parts = self.session.feed_identities(frames, copy=False)
        return self.session.deserialize(parts, content=True, copy=False)

    def close(self) -> None:
        """Close the sockets (pending messages are dropped)."""
        for sock in (self.shell, self.control, self.iopub):
            sock.close(linger=0)
