"""Sandbox lifecycle events (E2B's events API) and the webhooks they are delivered to.

Every event is stored in the registry together with one outbox row per enabled webhook that asked for
its type, in one transaction: a delivery (`webhooks.py`) removes its row once the receiver has taken
the event, so an event the receiver has not taken is still there after a restart of the server.
The fleet, the lifecycle and the snapshots call `emit`; nothing here calls back into them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from e2b_local.control.registry import Registry, SandboxRecord
from e2b_local.control.services.sandbox_logs import SandboxLogs

log = logging.getLogger("e2b_local")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sandbox_id TEXT NOT NULL,
    type TEXT NOT NULL,
    created_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_sandbox ON events (sandbox_id, seq);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_by_webhook ON webhook_outbox (webhook_id, seq);
"""

CREATED = "sandbox.lifecycle.created"
UPDATED = "sandbox.lifecycle.updated"
PAUSED = "sandbox.lifecycle.paused"
RESUMED = "sandbox.lifecycle.resumed"
CHECKPOINTED = "sandbox.lifecycle.checkpointed"
KILLED = "sandbox.lifecycle.killed"
EVENT_TYPES = (CREATED, UPDATED, PAUSED, RESUMED, CHECKPOINTED, KILLED)
# The version of the event format that carries `eventData.execution`.
EVENT_VERSION = "v2"
# The one team of a local server, as E2B names a team: a UUID.
TEAM_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "e2b-local:team"))
# How long events are kept (E2B's retention for the events API).
RETENTION_SECONDS = 7 * 24 * 3600
# The log line each event adds to the sandbox's logs.
LOG_LINES = {CREATED: "Sandbox created", UPDATED: "Sandbox updated", PAUSED: "Sandbox paused",
             RESUMED: "Sandbox resumed", CHECKPOINTED: "Sandbox snapshot taken", KILLED: "Sandbox killed"}


def rfc3339(timestamp: float) -> str:
    """`timestamp` (Unix seconds) as UTC RFC 3339 with milliseconds."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def execution(record: SandboxRecord, now: float) -> dict[str, Any]:
    """E2B's `eventData.execution`: the sandbox's run so far."""
    return {"started_at": rfc3339(record.started_at).replace(".000Z", "Z"), "vcpu_count": record.cpu_count,
            "memory_mb": record.memory_mb, "execution_time": max(0, int((now - record.started_at) * 1000))}


@dataclass
class Webhook:
    """A registered webhook; its secret signs deliveries and is never shown."""

    id: str
    name: str
    url: str
    events: list[str]
    enabled: bool = True
    signature_secret: str = ""
    created_at: float = field(default_factory=time.time)

    def to_wire(self) -> dict[str, Any]:
        """E2B's webhook object."""
        return {"id": self.id, "teamID": TEAM_ID, "name": self.name, "createdAt": rfc3339(self.created_at),
                "enabled": self.enabled, "url": self.url, "events": list(self.events)}


class Events:
    """The event log, the webhooks and their outbox."""

    def __init__(self, registry: Registry, logs: SandboxLogs) -> None:
        self.registry = registry
        self.logs = logs
        registry.create_tables(SCHEMA)
        # Called after each event is stored (the webhook delivery wakes up).
        self.listeners: list[Callable[[], None]] = []

    # -- events --------------------------------------------------------------------------------------
    def emit(self, event_type: str, record: SandboxRecord, data: dict[str, Any] | None = None) -> None:
        """Record an event of `record`'s sandbox and queue it for the webhooks that want it.

        A registry that cannot store it (a full disk) loses it, with a warning: recording an event
        never makes the operation it reports fail.
        """
        now = time.time()
        if event_type in (PAUSED, KILLED):
            data = {**(data or {}), "execution": execution(record, now)}
        if record.metadata:
            data = {**(data or {}), "sandbox_metadata": dict(record.metadata)}
        event = {
            "version": EVENT_VERSION,
            "id": str(uuid.uuid4()),
            "type": event_type,
            "eventData": data,
            "sandboxBuildId": str(uuid.uuid5(uuid.NAMESPACE_URL, "e2b-local:build:" + record.template_id)),
            "sandboxExecutionId": str(uuid.uuid5(uuid.NAMESPACE_URL, "e2b-local:run:" + record.sandbox_id)),
            "sandboxId": record.sandbox_id,
            "sandboxTeamId": TEAM_ID,
            "sandboxTemplateId": record.template_id,
            "timestamp": rfc3339(now),
        }
        body = json.dumps(event, separators=(",", ":"))
        try:
            with self.registry.transaction() as db:
                db.execute("INSERT INTO events (id, sandbox_id, type, created_at, body) VALUES (?, ?, ?, ?, ?)",
                           (event["id"], record.sandbox_id, event_type, now, body))
                for webhook in self._webhooks(db):
                    if webhook.enabled and event_type in webhook.events:
                        db.execute("INSERT INTO webhook_outbox (webhook_id, body, next_at) VALUES (?, ?, ?)",
                                   (webhook.id, body, now))
        except (sqlite3.Error, OSError) as exc:
            log.warning("sandbox %s: could not record its %s event (%s)", record.sandbox_id, event_type, exc)
            return
        self.logs.add(record.sandbox_id, "info", LOG_LINES[event_type], event=event_type,
                      **{k: json.dumps(v) if isinstance(v, dict) else v for k, v in (data or {}).items()})
        for listener in self.listeners:
            listener()

    def list(self, sandbox_id: str | None, types: list[str], offset: int, limit: int,
             ascending: bool) -> list[dict[str, Any]]:
        """Stored events, oldest or newest first, of one sandbox or all, of `types` (all when empty)."""
        sql, parameters = "SELECT body FROM events WHERE 1 = 1", []
        if sandbox_id is not None:
            sql += " AND sandbox_id = ?"
            parameters.append(sandbox_id)
        if types:
            sql += f" AND type IN ({', '.join('?' * len(types))})"
            parameters += types
        sql += f" ORDER BY seq {'ASC' if ascending else 'DESC'} LIMIT ? OFFSET ?"
        parameters += [limit, offset]
        return [json.loads(body) for (body,) in self.registry.read(sql, tuple(parameters))]

    def prune(self) -> None:
        """Drop events older than the retention period."""
        try:
            with self.registry.transaction() as db:
                db.execute("DELETE FROM events WHERE created_at < ?", (time.time() - RETENTION_SECONDS,))
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not drop old events (%s)", exc)

    # -- webhooks ------------------------------------------------------------------------------------
    @staticmethod
    def _webhooks(db: sqlite3.Connection) -> list[Webhook]:
        rows = db.execute("SELECT record FROM webhooks ORDER BY rowid").fetchall()
        return [Webhook(**json.loads(text)) for (text,) in rows]

    def webhooks(self) -> list[Webhook]:
        """Every registered webhook, oldest first."""
        return [Webhook(**json.loads(text)) for (text,) in
                self.registry.read("SELECT record FROM webhooks ORDER BY rowid")]

    def webhook(self, webhook_id: str) -> Webhook | None:
        rows = self.registry.read("SELECT record FROM webhooks WHERE id = ?", (webhook_id,))
        return Webhook(**json.loads(rows[0][0])) if rows else None

    def save_webhook(self, webhook: Webhook) -> None:
        """Register or replace a webhook."""
        with self.registry.transaction() as db:
            db.execute("INSERT OR REPLACE INTO webhooks (id, record) VALUES (?, ?)",
                       (webhook.id, json.dumps(asdict(webhook))))

    def delete_webhook(self, webhook_id: str) -> bool:
        """Unregister a webhook and drop its undelivered events; False when there is none."""
        with self.registry.transaction() as db:
            deleted = db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount
            db.execute("DELETE FROM webhook_outbox WHERE webhook_id = ?", (webhook_id,))
        return bool(deleted)

    # -- the outbox ----------------------------------------------------------------------------------
    def pending(self) -> list[tuple[int, str, str, int, float]]:
        """The oldest undelivered event of each webhook: (seq, webhook id, body, attempts, next attempt)."""
        return [tuple(row) for row in self.registry.read(  # type: ignore[misc]
            "SELECT o.seq, o.webhook_id, o.body, o.attempts, o.next_at FROM webhook_outbox o "
            "JOIN (SELECT MIN(seq) AS seq FROM webhook_outbox GROUP BY webhook_id) h ON o.seq = h.seq")]

    def delivered(self, seq: int) -> None:
        with self.registry.transaction() as db:
            db.execute("DELETE FROM webhook_outbox WHERE seq = ?", (seq,))

    def retry_at(self, seq: int, attempts: int, next_at: float) -> None:
        with self.registry.transaction() as db:
            db.execute("UPDATE webhook_outbox SET attempts = ?, next_at = ? WHERE seq = ?", (attempts, next_at, seq))
