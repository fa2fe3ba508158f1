"""Snapshots and forks through the real SDK: new sandboxes from a sandbox's files."""

from __future__ import annotations

import uuid

import pytest
from e2b import Sandbox, SandboxException, SandboxNotFoundException

from local.persistence_helpers import read_token, start_holder


def test_snapshot_used_twice_then_deleted(e2b_server) -> None:
    source = Sandbox.create(envs={"FROM_SOURCE": "yes"})
    clones: list[Sandbox] = []
    try:
        source.files.write("/home/user/prepared.txt", "prepared once")
        source.commands.run("rm /etc/motd", user="root")  # a deletion from the template layer
        token = start_holder(source)
        snapshot = source.create_snapshot()
        assert snapshot.snapshot_id.endswith(":default") and snapshot.names == []
        assert read_token(source) == token  # the source keeps running through the snapshot

        clones = [Sandbox.create(snapshot.snapshot_id) for _ in range(2)]
        for clone in clones:
            assert clone.files.read("/home/user/prepared.txt") == "prepared once"
            assert clone.commands.run("test -e /etc/motd || echo absent").stdout == "absent\n"
            assert clone.commands.run("echo $FROM_SOURCE").stdout == "yes\n"
            assert read_token(clone) is None  # files only: no processes, no memory
        clones[0].files.write("/home/user/prepared.txt", "changed in one clone")
        assert clones[1].files.read("/home/user/prepared.txt") == "prepared once"
        assert clones[0].get_info().template_id == snapshot.snapshot_id.split(":")[0]

        listed = [s.snapshot_id for s in Sandbox.list_snapshots(sandbox_id=source.sandbox_id).next_items()]
        assert listed == [snapshot.snapshot_id]
        assert [s.snapshot_id for s in source.list_snapshots().next_items()] == [snapshot.snapshot_id]
    finally:
        for sandbox in [source, *clones]:
            sandbox.kill()
    assert Sandbox.delete_snapshot(snapshot.snapshot_id) is True
    assert Sandbox.delete_snapshot(snapshot.snapshot_id) is False
    with pytest.raises(SandboxException) as info:
        Sandbox.create(snapshot.snapshot_id)
    assert info.value.status_code == 404


def test_named_snapshots_versions_and_pages(e2b_server) -> None:
    name = f"snap-{uuid.uuid4().hex[:8]}"
    source = Sandbox.create()
    try:
        source.files.write("/home/user/version.txt", "1")
        first = source.create_snapshot(name=name)
        assert first.snapshot_id == f"local/{name}:default" and first.names == [first.snapshot_id]
        source.files.write("/home/user/version.txt", "2")
        tagged = source.create_snapshot(name=f"{name}:v2")
        source.files.write("/home/user/version.txt", "3")
        replaced = source.create_snapshot(name=name)  # same name and tag: a new build replaces the old
        assert replaced.snapshot_id == first.snapshot_id

        found = {s.snapshot_id for s in Sandbox.list_snapshots(name=name).next_items()}
        assert found == {first.snapshot_id, tagged.snapshot_id}
        paginator = Sandbox.list_snapshots(sandbox_id=source.sandbox_id, limit=1)
        pages = []
        while paginator.has_next:
            pages.append(paginator.next_items())
        assert [len(p) for p in pages] == [1, 1]

        for reference, version in ((name, "3"), (tagged.snapshot_id, "2"), (f"{name}:v2", "2")):
            with Sandbox.create(reference) as sandbox:
                assert sandbox.files.read("/home/user/version.txt") == version
    finally:
        source.kill()
    assert Sandbox.delete_snapshot(tagged.snapshot_id) is True
    assert [s.snapshot_id for s in Sandbox.list_snapshots(name=name).next_items()] == [first.snapshot_id]
    assert Sandbox.delete_snapshot(first.snapshot_id) is True
    assert Sandbox.list_snapshots(name=name).next_items() == []


def test_snapshot_of_unknown_sandbox(e2b_server) -> None:
    with pytest.raises(SandboxNotFoundException):
        Sandbox.create_snapshot("nosuchsandbox0000000")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.fork("nosuchsandbox0000000")


def test_fork_of_three(e2b_server) -> None:
    parent = Sandbox.create(envs={"FAMILY": "parent"}, timeout=300)
    children: list[Sandbox] = []
    try:
        parent.files.write("/home/user/plan.txt", "version 1")
        token = start_holder(parent)
        deadline = parent.get_info().end_at
        results = parent.fork(count=3, timeout=120)
        assert len(results) == 3
        children = [c for c in results if isinstance(c, Sandbox)]
        assert len(children) == 3, results
        assert len({c.sandbox_id for c in children} | {parent.sandbox_id}) == 4
        for index, child in enumerate(children):
            assert child.files.read("/home/user/plan.txt") == "version 1"
            assert child.commands.run("echo $FAMILY").stdout == "parent\n"
            assert read_token(child) is None  # a fork starts from the files, without processes or memory
            child.files.write("/home/user/plan.txt", f"variant {index}")
        assert [c.files.read("/home/user/plan.txt") for c in children] == ["variant 0", "variant 1", "variant 2"]
        assert parent.files.read("/home/user/plan.txt") == "version 1"
        assert read_token(parent) == token  # the parent kept running
        assert parent.get_info().end_at == deadline  # and kept its deadline
    finally:
        for sandbox in [parent, *children]:
            sandbox.kill()
