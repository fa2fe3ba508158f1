"""The agent's journal: what happened inside the sandbox (processes started and ended, their output
lines), for its logs.

The host reads it over the agent's socket (`GET /journal`) and keeps what it read; entries are kept
here in memory, the newest `CAPACITY` process entries and the newest `OUTPUT_CAPACITY` output lines,
apart, so that a chatty process cannot push the starts and exits out. Each agent start has its own
`boot` id, so the host can tell a fresh journal (after a reboot on resume) from one it has read part of.
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
# Output lines kept between two reads by the host, and the longest line kept (longer ones are cut).
OUTPUT_CAPACITY = 2000
MAX_LINE = 1000
# Output lines recorded per second over every process, and in one burst: beyond them the output's size
# is counted, its lines not kept, so that a fast writer is not slowed down by them. A burst fits in the
# journal with room for the note of what was not kept.
LINES_PER_SECOND = 1000
BURST = OUTPUT_CAPACITY // 2


class Journal:
    """Numbered log entries of one agent run."""

    def __init__(self) -> None:
        self.boot = uuid.uuid4().hex
        self._entries: deque[dict[str, Any]] = deque(maxlen=CAPACITY)
        self._output: deque[dict[str, Any]] = deque(maxlen=OUTPUT_CAPACITY)
        # The unfinished last line of each (pid, stream), at most MAX_LINE bytes of it.
        self._partial: dict[tuple[int, str], bytes] = {}
        self._skipped: dict[tuple[int, str], int] = {}
        self._tokens = float(BURST)
        self._refilled = time.monotonic()
        self._seq = 0

    def _entry(self, level: str, message: str, fields: dict[str, object]) -> dict[str, Any]:
        self._seq += 1
        return {"seq": self._seq, "timestamp": time.time(), "level": level, "message": message,
                "fields": {k: str(v) for k, v in fields.items()}}

    def record(self, level: str, message: str, **fields: object) -> None:
        """Add an entry; `fields` are shown as text."""
        self._entries.append(self._entry(level, message, fields))

    def process_output(self, pid: int, stream: str, data: bytes) -> None:
        """Output of a process the agent started: each finished line becomes an entry, as the rate allows."""
        key = (pid, stream)
        partial = self._partial.pop(key, b"")
        budget = self._available()
        if not budget:
            self._skip(key, len(partial) + len(data))
            return
        # Split from the end, only as far as the budget goes: the lines before are counted, not cut out.
        pieces = data.rsplit(b"\n", budget + 1)
        last = pieces.pop()
        if not pieces:
            if key in self._skipped:
                self._skip(key, len(last))
            elif len(partial) < MAX_LINE:
                self._partial[key] = partial + last[:MAX_LINE - len(partial)]
            return
        if len(pieces) > budget or key in self._skipped:
            # The first piece ends a line that was not kept (or is too many).
            self._skip(key, len(partial) + len(pieces[0]) + 1)
            del pieces[0]
        else:
            pieces[0] = partial + pieces[0]
        self._tokens -= len(pieces)
        if key in self._skipped and pieces:
            self._note_skipped(pid, stream)
        for line in pieces:
            self._add_line(pid, stream, line)
        if last:
            self._partial[key] = last[:MAX_LINE]

    def _available(self) -> int:
        """How many lines the rate allows now."""
        now = time.monotonic()
        self._tokens = min(float(BURST), self._tokens + max(0.0, now - self._refilled) * LINES_PER_SECOND)
        self._refilled = now
        return int(self._tokens)

    def _skip(self, key: tuple[int, str], size: int) -> None:
        self._skipped[key] = self._skipped.get(key, 0) + size

    def _note_skipped(self, pid: int, stream: str) -> None:
        size = self._skipped.pop((pid, stream))
        self._output.append(self._entry("warn", f"{size} bytes of output not kept (written too fast)",
                                        {"pid": pid, "stream": stream}))

    def _add_line(self, pid: int, stream: str, line: bytes) -> None:
        text = line[:MAX_LINE].decode(errors="replace").rstrip("\r")
        self._output.append(self._entry("info", text, {"pid": pid, "stream": stream}))

    def _flush(self, pid: int) -> None:
        for stream in ("stdout", "stderr"):
            if (pid, stream) in self._skipped:
                self._note_skipped(pid, stream)
            if rest := self._partial.pop((pid, stream), None):
                self._add_line(pid, stream, rest)

    def process_started(self, pid: int, cmd: str, args: list[str], user: str, tag: str | None) -> None:
        """A process the agent started."""
        command = " ".join([cmd, *args])[:MAX_COMMAND]
        self.record("info", "Process started", pid=pid, cmd=command, user=user,
                    **({"tag": tag} if tag else {}))

    def process_ended(self, pid: int, cmd: str, returncode: int) -> None:
        """A process the agent started has ended (`returncode` as asyncio reports it: -N for signal N)."""
        self._flush(pid)
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
        entries = [e for e in self._entries if e["seq"] > start] + [e for e in self._output if e["seq"] > start]
        return {"boot": self.boot, "entries": sorted(entries, key=lambda e: e["seq"])}

    async def endpoint(self, request: Request) -> Response:
        """`GET /journal?boot=...&after=N`."""
        after = request.query_params.get("after", "0")
        return JSONResponse(self.since(request.query_params.get("boot"), int(after) if after.isdigit() else 0))
