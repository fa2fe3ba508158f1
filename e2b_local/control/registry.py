"""The registry of sandboxes, kept in SQLite so that it survives a restart (or crash) of the server."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    sandbox_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
"""


@dataclass
class SandboxRecord:
    """Everything known about one sandbox. Times are Unix seconds (floats)."""

    sandbox_id: str
    template_id: str
    key: str
    access_token: str
    started_at: float
    end_at: float
    state: str = "running"  # running | paused
    alias: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    cpu_count: int = 2
    memory_mb: int = 1024
    disk_size_mb: int = 0
    allow_internet_access: bool = True
    network: dict[str, Any] | None = None
    lifecycle: dict[str, Any] | None = None
    pause_mode: str | None = None
    pid: int = 0
    slirp_pid: int = 0

    @classmethod
    def from_json(cls, text: str) -> SandboxRecord:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class Registry:
    """A small, thread-safe store of sandbox records."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def put(self, record: SandboxRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sandboxes (sandbox_id, record) VALUES (?, ?)",
                (record.sandbox_id, record.to_json()),
            )

    def delete(self, sandbox_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sandboxes WHERE sandbox_id = ?", (sandbox_id,))

    def all(self) -> list[SandboxRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM sandboxes").fetchall()
        return [SandboxRecord.from_json(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
