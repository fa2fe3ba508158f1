"""Sandbox logs: what the lifecycle did to a sandbox and what its agent recorded, kept in the registry.

Lifecycle entries are written here as they happen. The agent's own entries (processes started and
ended, and their output lines) are read from its journal over the agent socket, when the logs are
asked for and before the sandbox is paused or killed, and kept here so that they outlive the sandbox.
What the agent sends is shown, never acted on: a sandbox can write anything there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import httpx

from e2b_local.control.registry import Registry
from e2b_local.protocol import JOURNAL_PATH

log = logging.getLogger("e2b_local")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sandbox_logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    level TEXT NOT NULL,
    logger TEXT NOT NULL,
    message TEXT NOT NULL,
    fields TEXT NOT NULL,
    agent_boot TEXT,
    agent_seq INTEGER
);
CREATE INDEX IF NOT EXISTS sandbox_logs_by_sandbox ON sandbox_logs (sandbox_id, created_at);
"""
# E2B's log levels, lowest first.
LEVELS = ("debug", "info", "warn", "error")
# How long the host waits for an agent's journal before it goes on without it.
JOURNAL_TIMEOUT = 2.0
# How long logs are kept after they were written (E2B keeps a sandbox's events 7 days).
RETENTION_SECONDS = 7 * 24 * 3600
# The most entries an agent read may add, and the longest text kept of what it sends.
MAX_AGENT_ENTRIES = 5000
MAX_TEXT = 4000
# The most output lines kept per sandbox: older ones are dropped as new ones come.
MAX_OUTPUT_LINES = 20000
# The logger names shown by `e2b sandbox logs` (it strips the "Svc" suffix, as for envd's).
LIFECYCLE_LOGGER = "lifecycleSvc"
AGENT_LOGGER = "processSvc"


@dataclass(frozen=True)
class LogEntry:
    """One log entry of a sandbox."""

    timestamp: float
    level: str
    logger: str
    message: str
    fields: dict[str, str]


def _text(value: object) -> str:
    return str(value)[:MAX_TEXT]


class SandboxLogs:
    """Every sandbox's log entries, in the registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        registry.create_tables(SCHEMA)

    def add(self, sandbox_id: str, level: str, message: str, **fields: object) -> None:
        """Add a lifecycle entry; a registry that cannot store it (a full disk) loses it, with a warning."""
        self._store([(sandbox_id, time.time(), level, LIFECYCLE_LOGGER, message,
                      json.dumps({k: _text(v) for k, v in fields.items()}), None, None)])

    def _store(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            with self.registry.transaction() as db:
                db.executemany("INSERT INTO sandbox_logs (sandbox_id, created_at, level, logger, message, fields, "
                               "agent_boot, agent_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not store %d sandbox log entries (%s)", len(rows), exc)

    async def collect(self, sandbox_id: str, client: httpx.AsyncClient) -> None:
        """Read the agent's journal entries not read yet; an agent that does not answer is skipped."""
        last = self.registry.read("SELECT agent_boot, agent_seq FROM sandbox_logs WHERE sandbox_id = ? "
                                  "AND agent_boot IS NOT NULL ORDER BY seq DESC LIMIT 1", (sandbox_id,))
        boot, after = last[0] if last else ("", 0)
        try:
            response = await client.get(JOURNAL_PATH, params={"boot": boot, "after": after},
                                        timeout=JOURNAL_TIMEOUT)
            response.raise_for_status()
            journal = response.json()
            rows = [self._agent_row(sandbox_id, str(journal["boot"]), entry)
                    for entry in journal["entries"][-MAX_AGENT_ENTRIES:]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.debug("sandbox %s: its journal could not be read (%s)", sandbox_id, exc)
            return
        if rows:
            self._store(rows)
            self._trim_output(sandbox_id)

    def _trim_output(self, sandbox_id: str) -> None:
        # Output lines are the agent's entries with a `stream` field.
        with contextlib.suppress(sqlite3.Error, OSError), self.registry.transaction() as db:
            db.execute("DELETE FROM sandbox_logs WHERE seq IN (SELECT seq FROM sandbox_logs WHERE sandbox_id = ? "
                       "AND agent_boot IS NOT NULL AND json_extract(fields, '$.stream') IS NOT NULL "
                       "ORDER BY seq DESC LIMIT -1 OFFSET ?)", (sandbox_id, MAX_OUTPUT_LINES))

    @staticmethod
    def _agent_row(sandbox_id: str, boot: str, entry: dict[str, Any]) -> tuple[Any, ...]:
        level = entry.get("level") if entry.get("level") in LEVELS else "info"
        fields = entry.get("fields") if isinstance(entry.get("fields"), dict) else {}
        timestamp = entry["timestamp"] if isinstance(entry.get("timestamp"), (int, float)) else time.time()
        return (sandbox_id, float(timestamp), level, AGENT_LOGGER, _text(entry.get("message", "")),
                json.dumps({_text(k): _text(v) for k, v in fields.items()}), boot[:64], int(entry["seq"]))

    def has_any(self, sandbox_id: str) -> bool:
        """Whether any entry of the sandbox is kept."""
        return bool(self.registry.read("SELECT 1 FROM sandbox_logs WHERE sandbox_id = ? LIMIT 1", (sandbox_id,)))

    def entries(self, sandbox_id: str, since: float | None = None, limit: int = 1000, forward: bool = True,
                level: str | None = None, search: str | None = None) -> list[LogEntry]:
        """The sandbox's entries from `since` (Unix seconds) on, in time order (newest first unless `forward`).

        `level` keeps that level and those above it; `search` keeps entries whose message contains it.
        """
        sql = "SELECT created_at, level, logger, message, fields FROM sandbox_logs WHERE sandbox_id = ?"
        parameters: list[Any] = [sandbox_id]
        if since is not None:
            sql += " AND created_at >= ?" if forward else " AND created_at <= ?"
            parameters.append(since)
        if level is not None:
            allowed = LEVELS[LEVELS.index(level):]
            sql += f" AND level IN ({', '.join('?' * len(allowed))})"
            parameters += allowed
        if search:
            sql += " AND instr(message, ?) > 0"
            parameters.append(search)
        order = "ASC" if forward else "DESC"
        sql += f" ORDER BY created_at {order}, seq {order} LIMIT ?"
        parameters.append(limit)
        return [LogEntry(ts, lvl, logger, message, json.loads(fields))
                for ts, lvl, logger, message, fields in self.registry.read(sql, tuple(parameters))]

    def prune(self) -> None:
        """Drop entries older than the retention period."""
        with contextlib.suppress(sqlite3.Error, OSError), self.registry.transaction() as db:
            db.execute("DELETE FROM sandbox_logs WHERE created_at < ?", (time.time() - RETENTION_SECONDS,))
