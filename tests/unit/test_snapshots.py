"""Snapshot names and references, and the store of snapshot builds (a temporary directory and registry)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2b_local.control.errors import ApiError
from e2b_local.control.registry import Registry, SandboxRecord, SnapshotRecord
from e2b_local.control.snapshots import SnapshotStore, parse_name, split_reference


@pytest.mark.parametrize(("reference", "expected"), [
    ("app", ("app", None)),
    ("app:v2", ("app", "v2")),
    ("local/app:v2", ("app", "v2")),
    ("team-slug/app", ("app", None)),
    ("snap0123:default", ("snap0123", "default")),
    ("app:", ("app", None)),
])
def test_split_reference(reference: str, expected: tuple[str, str | None]) -> None:
    assert split_reference(reference) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (None, (None, "default")),
    ("", (None, "default")),
    ("my-app", ("my-app", "default")),
    ("local/My_App.1:v2", ("My_App.1", "v2")),
    ("a" * 128, ("a" * 128, "default")),
])
def test_valid_names(raw: str | None, expected: tuple[str | None, str]) -> None:
    assert parse_name(raw) == expected


@pytest.mark.parametrize(("raw", "message"), [
    ("has space", "invalid snapshot name 'has space': use letters, digits, '.', '_' and '-'"),
    ("-leading", "invalid snapshot name '-leading': use letters, digits, '.', '_' and '-'"),
    ("a" * 129, f"invalid snapshot name '{'a' * 129}': use letters, digits, '.', '_' and '-'"),
    ("app:bad tag", "invalid snapshot tag 'bad tag': use letters, digits, '.', '_' and '-'"),
    ("base", "'base' is a built-in template name; choose another snapshot name"),
    ("local/code-interpreter-v1:v1", "'code-interpreter-v1' is a built-in template name; choose another snapshot name"),
])
def test_invalid_names_are_refused(raw: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_name(raw)
    assert (caught.value.status, caught.value.message) == (400, message)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SnapshotStore]:
    registry = Registry(tmp_path / "registry.sqlite3")
    try:
        yield SnapshotStore(tmp_path / "snapshots", registry)
    finally:
        registry.close()


def _source(sandbox_id: str = "parent") -> SandboxRecord:
    return SandboxRecord(sandbox_id=sandbox_id, template_id="base", key="k", access_token="t", started_at=0,
                         end_at=0, base_template="base", layers=["/layer"], env_vars={"A": "1"})


def _add(store: SnapshotStore, name: str | None, tag: str = "default", content: bytes = b"x",
         sandbox_id: str = "parent") -> SnapshotRecord:
    staged = store.staging()
    (staged / "upper").mkdir()
    (staged / "upper" / "file").write_bytes(content)
    return store.add(_source(sandbox_id), staged / "upper", name, tag)


def test_a_build_keeps_the_files_and_the_source(store: SnapshotStore) -> None:
    snap = _add(store, "app", content=b"hello")
    assert (store.files(snap) / "file").read_bytes() == b"hello"
    assert (snap.sandbox_id, snap.base_template, snap.layers) == ("parent", "base", ["/layer"])
    assert snap.env_vars == {"A": "1"}
    assert snap.snapshot_id == "local/app:default"


def test_unnamed_snapshots_get_templates_of_their_own(store: SnapshotStore) -> None:
    one, two = _add(store, None), _add(store, None)
    assert one.template_id != two.template_id
    assert one.template_id.startswith("snap")
    assert store.for_template(one.template_id) == one
    assert store.for_template(f"{two.template_id}:default") == two


def test_tags_of_one_name_share_a_template(store: SnapshotStore) -> None:
    v1 = _add(store, "app", "v1")
    default = _add(store, "app")
    assert v1.template_id == default.template_id
    assert store.for_template("app:v1") == v1
    # No tag: `default` wins over a newer other tag.
    _add(store, "app", "v3")
    assert store.for_template("local/app") == default
    assert store.for_template("app:nope") is None
    assert store.for_template("other") is None


def test_no_default_tag_means_the_newest_build(store: SnapshotStore) -> None:
    _add(store, "app", "v1")
    newest = _add(store, "app", "v2")
    assert store.for_template("app") == newest


def test_the_same_name_and_tag_replaces_the_build(store: SnapshotStore) -> None:
    old = _add(store, "app", content=b"old")
    new = _add(store, "app", content=b"new")
    assert store.matching("app") == [new]
    assert not (store.directory / old.build_id).exists()
    assert (store.files(new) / "file").read_bytes() == b"new"


def test_matching_by_sandbox(store: SnapshotStore) -> None:
    a = _add(store, None, sandbox_id="a")
    _add(store, None, sandbox_id="b")
    assert store.matching(sandbox_id="a") == [a]
    assert len(store.matching()) == 2


def test_clean_up_removes_copies_no_record_names(store: SnapshotStore) -> None:
    kept = _add(store, "app")
    stray = store.staging()
    (stray / "leftover").write_text("x")
    store.clean_up()
    assert not stray.exists()
    assert (store.files(kept) / "file").exists()


def test_remove_deletes_record_and_files(store: SnapshotStore) -> None:
    snap = _add(store, "app")
    store.remove(snap)
    assert store.matching() == []
    assert not (store.directory / snap.build_id).exists()
