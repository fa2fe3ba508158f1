"""Template and build records, kept in their own tables of the server's SQLite registry."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS template_builds (
    build_id TEXT PRIMARY KEY,
    template_id TEXT NOT NULL,
    record TEXT NOT NULL
);
"""
# A build's states, as E2B reports them.
WAITING, BUILDING, READY, ERROR = "waiting", "building", "ready", "error"
DEFAULT_TAG = "default"

Record = TypeVar("Record")


def _from_json(cls: type[Record], text: str) -> Record:
    data = json.loads(text)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TagRecord:
    """A tag of a template: the build it names and when it was assigned."""

    build_id: str
    assigned_at: float


@dataclass
class TemplateRecord:
    """A template: its name, its settings and its tags (each naming one build)."""

    template_id: str
    name: str
    created_at: float
    updated_at: float
    cpu_count: int
    memory_mb: int
    tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    build_count: int = 0
    spawn_count: int = 0
    last_spawned_at: float | None = None

    def tag(self, name: str) -> TagRecord | None:
        raw = self.tags.get(name)
        return TagRecord(**raw) if raw else None

    def set_tag(self, name: str, build_id: str, at: float) -> None:
        self.tags[name] = asdict(TagRecord(build_id, at))


@dataclass
class BuildRecord:
    """One build of a template: its recipe, its outcome and the layers it stacks (topmost first)."""

    build_id: str
    template_id: str
    status: str
    created_at: float
    updated_at: float
    cpu_count: int
    memory_mb: int
    tags: list[str] = field(default_factory=list)
    finished_at: float | None = None
    # The request the SDK started the build with (fromTemplate/fromImage, steps, start and ready commands).
    recipe: dict[str, Any] = field(default_factory=dict)
    # The layer keys of the build's own chain, topmost first, and the built-in template under them.
    layers: list[str] = field(default_factory=list)
    base_template: str = "base"
    # The cache key of the whole recipe: a template built from this one continues from it.
    cache_key: str = ""
    # The environment, user and working directory the steps left (what sandboxes of it start with).
    env: dict[str, str] = field(default_factory=dict)
    user: str = "user"
    workdir: str = "/home/user"
    start_cmd: str | None = None
    ready_cmd: str | None = None
    # Why it failed: {"message": ..., "step": ..., "logEntries": [...]}.
    reason: dict[str, Any] | None = None


class TemplateRegistry:
    """Thread-safe access to the template tables (the registry file is shared with the sandboxes')."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        # The file exists already (the sandbox registry made it private). Opening and closing it here
        # by hand would drop the POSIX locks SQLite holds on it for the other connection of this process.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def put_template(self, record: TemplateRecord) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO templates (template_id, record) VALUES (?, ?)",
                             (record.template_id, json.dumps(asdict(record))))

    def templates(self) -> list[TemplateRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM templates").fetchall()
        return [_from_json(TemplateRecord, r[0]) for r in rows]

    def delete_template(self, template_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM template_builds WHERE template_id = ?", (template_id,))
            self._db.execute("DELETE FROM templates WHERE template_id = ?", (template_id,))

    def put_build(self, record: BuildRecord) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO template_builds (build_id, template_id, record) VALUES (?, ?, ?)",
                             (record.build_id, record.template_id, json.dumps(asdict(record))))

    def builds(self, template_id: str | None = None) -> list[BuildRecord]:
        with self._lock:
            if template_id is None:
                rows = self._db.execute("SELECT record FROM template_builds").fetchall()
            else:
                rows = self._db.execute("SELECT record FROM template_builds WHERE template_id = ?",
                                        (template_id,)).fetchall()
        return sorted((_from_json(BuildRecord, r[0]) for r in rows), key=lambda b: b.created_at)

    def close(self) -> None:
        with self._lock:
            self._db.close()
