"""Jupyter connection files: where a kernel listens and the key that signs its messages.

Kernels that can (ipykernel, the Bash kernel) listen on Unix socket files in a private directory;
Deno's kernel only speaks TCP, which works because the agent shares the sandbox's network namespace
and so its loopback. Nothing here imports ZeroMQ, so a kernel can be spawned before that import.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

# The five channels of a Jupyter kernel, in the order ipc port numbers are assigned.
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
# The message signature scheme Jupyter kernels use by default.
SIGNATURE_SCHEME = "hmac-sha256"


@dataclass(frozen=True)
class ConnectionInfo:
    """What a kernel's connection file says: transport, address, ports and the signing key."""

    transport: str
    ip: str
    ports: dict[str, int]
    key: str

    @classmethod
    def new(cls, transport: str, directory: str) -> ConnectionInfo:
        """Fresh endpoints: socket files under `directory` (ipc) or free loopback ports (tcp)."""
        key = secrets.token_hex(32)
        if transport == "ipc":
            return cls("ipc", os.path.join(directory, "kernel"), {c: i + 1 for i, c in enumerate(CHANNELS)}, key)
        return cls("tcp", "127.0.0.1", dict(zip(CHANNELS, _free_ports(len(CHANNELS)), strict=True)), key)

    def url(self, channel: str) -> str:
        """The ZeroMQ endpoint of one channel."""
        port = self.ports[channel]
        return f"ipc://{self.ip}-{port}" if self.transport == "ipc" else f"tcp://{self.ip}:{port}"

    def to_json(self, kernel_name: str) -> str:
        """The connection file's content (the format every Jupyter kernel reads)."""
        data: dict[str, Any] = {f"{c}_port": p for c, p in self.ports.items()}
        data.update(transport=self.transport, ip=self.ip, key=self.key, signature_scheme=SIGNATURE_SCHEME,
                    kernel_name=kernel_name)
        return json.dumps(data)


def _free_ports(count: int) -> list[int]:
    # Bind them all at once so that the kernel gets distinct ports; a tiny race with other programs
    # of the sandbox remains, as with every Jupyter client.
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
