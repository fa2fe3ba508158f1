"""The SQLite registry of sandboxes and snapshots, on a temporary file."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2b_local.control.registry import Registry, SandboxRecord, SnapshotRecord


def _record(sandbox_id: str = "s1", **changes: object) -> SandboxRecord:
    return SandboxRecord(sandbox_id=sandbox_id, template_id="base", key="k-1", access_token="tok",  # type: ignore[arg-type]
                         started_at=1.5, end_at=301.5, **changes)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "registry.sqlite3"


@pytest.fixture
def registry(path: Path) -> Iterator[Registry]:
    reg = Registry(path)
    try:
        yield reg
    finally:
        reg.close()


def test_records_survive_reopening(path: Path, registry: Registry) -> None:
    record = _record(metadata={"a": "b"}, env_vars={"X": "1"}, lifecycle={"onTimeout": "pause", "autoResume": True},
                     network={"allowOut": ["10.0.0.1"]}, layers=["/l1", "/l2"], state="paused", pause_mode="full")
    registry.put(record)
    registry.close()
    again = Registry(path)
    try:
        assert again.all() == [record]
    finally:
        again.close()


def test_put_replaces_and_delete_forgets(registry: Registry) -> None:
    registry.put(_record("s1"))
    registry.put(_record("s2"))
    registry.put(_record("s1", state="paused"))
    assert sorted((r.sandbox_id, r.state) for r in registry.all()) == [("s1", "paused"), ("s2", "running")]
    registry.delete("s1")
    registry.delete("never-there")
    assert [r.sandbox_id for r in registry.all()] == ["s2"]


def test_the_file_is_private(path: Path, registry: Registry) -> None:
    registry.put(_record())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_fields_of_a_newer_version_are_ignored(path: Path, registry: Registry) -> None:
    data = json.loads(_record().to_json())
    data["field_from_the_future"] = {"x": 1}
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO sandboxes (sandbox_id, record) VALUES (?, ?)", ("s1", json.dumps(data)))
    assert registry.all() == [_record(traffic_access_token=data["traffic_access_token"])]


def test_an_old_record_gets_a_traffic_token_that_persists(path: Path, registry: Registry) -> None:
    data = json.loads(_record().to_json())
    del data["traffic_access_token"]
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO sandboxes (sandbox_id, record) VALUES (?, ?)", ("s1", json.dumps(data)))
    first = registry.all()[0].traffic_access_token
    assert len(first) == 32
    # The next load reads the token written back, rather than inventing another.
    assert registry.all()[0].traffic_access_token == first


def test_snapshots_are_stored_apart_from_sandboxes(registry: Registry) -> None:
    snap = SnapshotRecord(build_id="b1", template_id="snapx", tag="default", sandbox_id="s1", base_template="base",
                          layers=["/l"], created_at=2.0, name="app", env_vars={"A": "1"})
    registry.put_snapshot(snap)
    assert registry.snapshots() == [snap]
    assert registry.all() == []
    registry.delete_snapshot("b1")
    assert registry.snapshots() == []
