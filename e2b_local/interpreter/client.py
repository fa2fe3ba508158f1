"""A lean Jupyter client for one kernel: ZeroMQ sockets and message framing.

This sits on the hot path of every execution, so it is built to cost little CPU:

- messages are built, signed, verified and parsed here rather than by jupyter_client's `Session`:
  its `deserialize` turns every timestamp into a datetime with dateutil, which costs more than
  everything else the agent does for a short execution (E2B's lines want the timestamp as the string
  the kernel sent anyway), and its `msg` and `serialize` take a tenth of a millisecond per request;
- the sockets are plain (blocking-API) ZeroMQ sockets watched by the event loop through their file
  descriptors: each wake-up drains every waiting message and hands it to a callback, with no future
  or task per message as `zmq.asyncio` and jupyter_client's channels would create.

ZeroMQ's descriptor only signals edges, so a socket is drained completely on every wake-up, and once
more after each send (a send may consume the edge of an incoming message).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import zmq

from e2b_local.interpreter.connection import ConnectionInfo

# Separates the routing identities from the signed parts of a Jupyter message.
DELIMITER = b"<IDS|MSG>"
# The messaging protocol's version our requests declare, and the user they come from.
PROTOCOL_VERSION = "5.4"
USERNAME = "e2b-local"
# How soon a socket retries connecting to a kernel that is not listening yet (ZeroMQ's default, 100 ms,
# would add up to that much to every kernel start).
RECONNECT_MS = 5

Handler = Callable[[dict[str, Any]], None]


class MessageError(ValueError):
    """A message that is malformed or whose signature does not match."""


class KernelClient:
    """The shell, control and iopub sockets of one kernel; messages go to the handlers given."""

    def __init__(self, info: ConnectionInfo, on_iopub: Handler, on_reply: Handler) -> None:
        self.session = uuid.uuid4().hex
        self._sent = 0
        self._mac = hmac.new(info.key.encode(), digestmod=hashlib.sha256)
        self._loop = asyncio.get_running_loop()
        ctx = zmq.Context.instance()
        self.shell = self._connect(ctx, zmq.DEALER, info.url("shell"))
        self.control = self._connect(ctx, zmq.DEALER, info.url("control"))
        self.iopub = self._connect(ctx, zmq.SUB, info.url("iopub"))
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self._handlers = {self.shell: on_reply, self.control: on_reply, self.iopub: on_iopub}
        for sock in self._handlers:
            self._loop.add_reader(sock.getsockopt(zmq.FD), self._drain, sock)

    @staticmethod
    def _connect(ctx: zmq.Context, kind: int, url: str) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
        sock.connect(url)
        return sock

    def send(self, sock: zmq.Socket, msg_type: str, content: dict[str, Any]) -> str:
        """Sign and send a request; returns its message id (replies and outputs carry it as parent)."""
        msg_id, frames = self.message(msg_type, content)
        self.send_frames(sock, frames)
        return msg_id

    def message(self, msg_type: str, content: dict[str, Any]) -> tuple[str, list[bytes]]:
        """A request's message id and its signed frames, as `Session.serialize` frames them."""
        self._sent += 1
        msg_id = f"{self.session}_{self._sent}"
        date = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        header = {"msg_id": msg_id, "msg_type": msg_type, "username": USERNAME, "session": self.session,
                  "date": date, "version": PROTOCOL_VERSION}
        parts = [json.dumps(header).encode(), b"{}", b"{}",
                 json.dumps(content, ensure_ascii=False, allow_nan=False).encode("utf8", "surrogateescape")]
        return msg_id, [DELIMITER, self._signature(parts), *parts]

    def _signature(self, parts: list[bytes]) -> bytes:
        """The HMAC of a message's four JSON parts, as its signature frame carries it."""
        mac = self._mac.copy()
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()

    def send_frames(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        """Send a message's frames (a DEALER queues them without blocking)."""
        sock.send_multipart(frames)
        self._loop.call_soon(self._drain, sock)

    def _drain(self, sock: zmq.Socket) -> None:
        handler = self._handlers.get(sock)
        if handler is None:  # closed meanwhile
            return
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = self.parse(frames)
            except (MessageError, ValueError, KeyError):
                continue  # nothing but the kernel knows the key: not a message for us
            handler(msg)
            if sock not in self._handlers:  # the handler closed the client
                return

    def parse(self, frames: list[bytes]) -> dict[str, Any]:
        """Verify and parse one message's frames (identities, delimiter, signature, four JSON parts)."""
        try:
            start = frames.index(DELIMITER) + 1
        except ValueError:
            raise MessageError("no delimiter") from None
        if len(frames) < start + 5:
            raise MessageError("truncated message")
        signature, header, parent, metadata, content = frames[start:start + 5]
        if not hmac.compare_digest(self._signature([header, parent, metadata, content]), signature):
            raise MessageError("bad signature")
        head = json.loads(header)
        return {"header": head, "msg_type": head["msg_type"], "parent_header": json.loads(parent),
                "content": json.loads(content)}

    def close(self) -> None:
        """Stop watching and close the sockets (pending messages are dropped)."""
        for sock in list(self._handlers):
            self._loop.remove_reader(sock.getsockopt(zmq.FD))
            sock.close(linger=0)
        self._handlers.clear()
