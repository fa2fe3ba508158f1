"""The registry of sandboxes and snapshots, kept in SQLite so that it survives a restart (or crash) of the server."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    sandbox_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    build_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    volume_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    secret_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
"""
# The namespace snapshot names are reported in (E2B puts the team's slug there).
SNAPSHOT_NAMESPACE = "local"
# E2B's default user and working directory of a sandbox's commands.
DEFAULT_USER = "user"
DEFAULT_WORKDIR = "/home/user"

Record = TypeVar("Record")


class SandboxState(StrEnum):
    """Whether a sandbox runs; the values are E2B's `state` and the registry's stored text."""

    RUNNING = "running"
    PAUSED = "paused"


class PauseMode(StrEnum):
    """What a paused sandbox kept: memory and files (`full`), or files only."""

    FULL = "full"
    FILESYSTEM = "filesystem"


class OnTimeout(StrEnum):
    """What happens when a sandbox's time is up."""

    KILL = "kill"
    PAUSE = "pause"


@dataclass(frozen=True)
class Lifecycle:
    """A sandbox's lifecycle settings (create's autoPause and autoResume)."""

    on_timeout: OnTimeout = OnTimeout.KILL
    auto_resume: bool = False

    @property
    def pauses(self) -> bool:
        """Whether the sandbox is paused, rather than lost, when its time is up or its processes end."""
        return self.on_timeout is OnTimeout.PAUSE

    def to_wire(self) -> dict[str, Any]:
        """E2B's `lifecycle` object, which is also its stored form."""
        return {"onTimeout": self.on_timeout.value, "autoResume": self.auto_resume}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Lifecycle:
        return cls(on_timeout=OnTimeout(data.get("onTimeout") or OnTimeout.KILL.value),
                   auto_resume=bool(data.get("autoResume")))


def _from_json(cls: type[Record], text: str) -> Record:
    # Fields added by later versions are ignored, so an older server can read a newer registry.
    data = json.loads(text)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class SandboxRecord:
    """Everything known about one sandbox. Times are Unix seconds (floats).

    While a sandbox is paused, `end_at` is the moment it was paused: a paused sandbox does not expire.
    """

    sandbox_id: str
    template_id: str
    key: str
    access_token: str
    started_at: float
    end_at: float
    state: SandboxState = SandboxState.RUNNING
    alias: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    cpu_count: int = 2
    memory_mb: int = 1024
    disk_size_mb: int = 0
    allow_internet_access: bool = True
    network: dict[str, Any] | None = None
    lifecycle: Lifecycle | None = None
    pause_mode: PauseMode | None = None  # while paused
    pid: int = 0
    slirp_pid: int = 0
    # The read-only layers under the sandbox's own files, topmost first (empty: the template's current ones).
    layers: list[str] = field(default_factory=list)
    # The built-in template those layers belong to (differs from template_id for snapshot-based sandboxes).
    base_template: str = ""
    # The lifetime given at create, in seconds: an automatic resume grants it again.
    timeout: int = 300
    # What an automatic pause at the timeout keeps: memory and files (True) or files only.
    auto_pause_memory: bool = True
    # The agent did not answer when the sandbox was paused with its memory: only a reboot may resume it.
    envd_unresponsive_at_pause: bool = False
    # The volumes mounted in the sandbox: {"name", "path"} as E2B reports them, and "source", the host directory.
    volume_mounts: list[dict[str, str]] = field(default_factory=list)
    # What the code-interpreter port accepts as `E2B-Traffic-Access-Token` (the SDK sends nothing else
    # there); records written before it existed get one when they are loaded.
    traffic_access_token: str = field(default_factory=lambda: secrets.token_hex(16))
    # Who commands run as and where, when a request names neither (a custom template's last user and
    # working directory; E2B's defaults otherwise).
    default_user: str = DEFAULT_USER
    default_workdir: str = DEFAULT_WORKDIR

    def __post_init__(self) -> None:
        # Stored as text and as E2B's lifecycle object; typed in memory.
        self.state = SandboxState(self.state)
        if self.pause_mode is not None:
            self.pause_mode = PauseMode(self.pause_mode)
        if isinstance(self.lifecycle, dict):
            self.lifecycle = Lifecycle.from_wire(self.lifecycle)

    @property
    def running(self) -> bool:
        return self.state is SandboxState.RUNNING

    @property
    def paused(self) -> bool:
        return self.state is SandboxState.PAUSED

    @property
    def pauses_on_loss(self) -> bool:
        """Whether the sandbox is kept paused on its files when its processes are lost (its lifecycle pauses)."""
        return self.lifecycle is not None and self.lifecycle.pauses

    @classmethod
    def from_json(cls, text: str) -> SandboxRecord:
        return _from_json(cls, text)

    def to_json(self) -> str:
        data = asdict(self)
        data["lifecycle"] = self.lifecycle.to_wire() if self.lifecycle is not None else None
        return json.dumps(data)


@dataclass
class SnapshotRecord:
    """One snapshot build: a copy of a sandbox's files over the template layers it ran on.

    Memory is never part of a local snapshot: sandboxes started from one boot fresh on its files.
    """

    build_id: str  # its directory under the data directory's snapshots/
    template_id: str  # the snapshot template; every build of one name shares it
    tag: str
    sandbox_id: str  # the sandbox it was taken from
    base_template: str
    layers: list[str]
    created_at: float
    name: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)
    default_user: str = DEFAULT_USER
    default_workdir: str = DEFAULT_WORKDIR

    @property
    def snapshot_id(self) -> str:
        """E2B's form: `namespace/name:tag` for a named snapshot, else `template-id:tag`."""
        if self.name:
            return f"{SNAPSHOT_NAMESPACE}/{self.name}:{self.tag}"
        return f"{self.template_id}:{self.tag}"

    @property
    def names(self) -> list[str]:
        return [self.snapshot_id] if self.name else []

    @classmethod
    def from_json(cls, text: str) -> SnapshotRecord:
        return _from_json(cls, text)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class VolumeRecord:
    """One volume: a filesystem image of its own, mounted into the sandboxes that name it."""

    volume_id: str
    name: str
    token: str  # what the content API accepts as `Authorization: Bearer`
    size_mb: int
    created_at: float

    @classmethod
    def from_json(cls, text: str) -> VolumeRecord:
        return _from_json(cls, text)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class SecretRecord:
    """One secret: its metadata and its current value, sealed (encrypted) with the server's secret key."""

    secret_id: str
    name: str
    version: int
    sealed: str
    created_at: float
    updated_at: float
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> SecretRecord:
        return _from_json(cls, text)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class Registry:
    """A small, thread-safe store of sandbox and snapshot records."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        # Created private before SQLite opens it: its -wal, -shm and -journal files copy this mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
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
        records = []
        for (text,) in rows:
            record = SandboxRecord.from_json(text)
            if "traffic_access_token" not in json.loads(text):
                # The token it was just given must outlive a restart; on a full disk, the next start retries.
                with contextlib.suppress(sqlite3.Error):
                    self.put(record)
            records.append(record)
        return records

    def put_snapshot(self, record: SnapshotRecord) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO snapshots (build_id, record) VALUES (?, ?)",
                             (record.build_id, record.to_json()))

    def delete_snapshot(self, build_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM snapshots WHERE build_id = ?", (build_id,))

    def snapshots(self) -> list[SnapshotRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM snapshots").fetchall()
        return [SnapshotRecord.from_json(row[0]) for row in rows]

    def put_volume(self, record: VolumeRecord) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO volumes (volume_id, record) VALUES (?, ?)",
                             (record.volume_id, record.to_json()))

    def delete_volume(self, volume_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM volumes WHERE volume_id = ?", (volume_id,))

    def volumes(self) -> list[VolumeRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM volumes").fetchall()
        return [VolumeRecord.from_json(row[0]) for row in rows]

    def put_secret(self, record: SecretRecord) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO secrets (secret_id, record) VALUES (?, ?)",
                             (record.secret_id, record.to_json()))

    def delete_secret(self, secret_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM secrets WHERE secret_id = ?", (secret_id,))

    def secrets(self) -> list[SecretRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM secrets").fetchall()
        return [SecretRecord.from_json(row[0]) for row in rows]

    # -- tables of the services built on the registry -------------------------------------------------
    def create_tables(self, schema: str) -> None:
        """Create a service's own tables (`CREATE TABLE IF NOT EXISTS ...` statements)."""
        with self._lock:
            self._db.executescript(schema)

    def read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows a query returns."""
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that are stored together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
