"""The agent's journal: what happened inside the sandbox (processes started and ended), for its logs.

The host reads it over the agent's socket (`GET /journal`) and keeps what it read; entries are kept
here in memory, the newest `CAPACITY` of them. Each agent start has its own `boot` id, so the host can
tell a fresh journal (after a reboot on resume) from one it has read part of.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import deque
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# Entries kept between two reads by the host.
CAPACITY = 2000
# The longest command line recorded, in characters.
MAX_COMMAND = 1000


class Journal:
    """Numbered log entries of one agent run."""

    def __init__(self) -> None:
        self.boot = uuid.uuid4().hex
        self._entries: deque[dict[str, Any]] = deque(maxlen=CAPACITY)
        self._seq = 0

    def record(self, level: str, message: str, **fields: object) -> None:
        """Add an entry; `fields` are shown as text."""
        self._seq += 1
        self._entries.append({"seq": self._seq, "timestamp": time.time(), "level": level, "message": message,
                              "fields": {k: str(v) for k, v in fields.items()}})

    def process_started(self, pid: int, cmd: str, args: list[str], user: str, tag: str | None) -> None:
        """A process the agent started."""
        command = " ".join([cmd, *args])[:MAX_COMMAND]
        self.record("info", "Process started", pid=pid, cmd=command, user=user,
                    **({"tag": tag} if tag else {}))

    def process_ended(self, pid: int, cmd: str, returncode: int) -> None:
        """A process the agent started has ended (`returncode` as asyncio reports it: -N for signal N)."""
        if returncode >= 0:
            exit_code, status = returncode, f"exit status {returncode}"
        else:
            name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else -returncode
            exit_code, status = -1, f"signal: {name}"
        self.record("info" if exit_code == 0 else "warn", "Process exited", pid=pid, cmd=cmd[:MAX_COMMAND],
                    exit_code=exit_code, status=status)

    def since(self, boot: str | None, after: int) -> dict[str, Any]:
        """The entries after number `after` of run `boot` (all of them for another run)."""
        start = after if boot == self.boot else 0
        return {"boot": self.boot, "entries": [e for e in self._entries if e["seq"] > start]}

    async def endpoint(self, request: Request) -> Response:
        """`GET /journal?boot=...&after=N`."""
        after = request.query_params.get("after", "0")
        return JSONResponse(self.since(request.query_params.get("boot"), int(after) if after.isdigit() else 0))
