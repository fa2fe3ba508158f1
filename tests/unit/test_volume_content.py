"""The volume content API's file operations on a plain directory: confinement, owners, modes, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2b_local.control.api.volumes import entry
from e2b_local.control.errors import ApiError
from e2b_local.control.volumes import check_mount_path
from e2b_local.control.volumes.content import ContentError, VolumeFiles, normalize


@pytest.fixture
def files(tmp_path: Path) -> VolumeFiles:
    root = tmp_path / "root"
    root.mkdir()
    # id_base 0 when not root: owners are then the caller's own ids, which chown accepts.
    return VolumeFiles(str(root), 0 if os.geteuid() == 0 else os.geteuid() - 1000)


@pytest.mark.parametrize(("raw", "normal"), [
    ("a/b", "/a/b"), ("/a//b/", "/a/b"), ("//a", "/a"), ("/../../etc", "/etc"), ("/a/./b/../c", "/a/c"), ("", "/"),
])
def test_normalize(raw: str, normal: str) -> None:
    assert normalize(raw) == normal


def test_write_read_stat_list_remove(files: VolumeFiles) -> None:
    written = files.write("/d/e/f.txt", iter([b"ab", b"cd"]), force=True, mode=0o600)
    assert (written.type, written.path, written.size, written.mode) == ("file", "/d/e/f.txt", 4, 0o600)
    fd = files.open_file("/d/e/f.txt")
    assert b"".join(files.read_chunks(fd)) == b"abcd"
    assert [e.path for e in files.list("/", depth=3)] == ["/d", "/d/e", "/d/e/f.txt"]
    assert [e.path for e in files.list("/d")] == ["/d/e"]
    assert files.stat("/").type == "directory"
    files.remove("/d")
    with pytest.raises(ContentError) as info:
        files.stat("/d")
    assert info.value.status == 404


def test_missing_parent_without_force_is_404(files: VolumeFiles) -> None:
    for call in (lambda: files.write("/no/file", iter([b""])), lambda: files.make_dir("/no/dir")):
        with pytest.raises(ContentError) as info:
            call()
        assert info.value.status == 404


def test_existing_directory_is_409(files: VolumeFiles) -> None:
    files.make_dir("/x")
    with pytest.raises(ContentError) as info:
        files.make_dir("/x")
    assert info.value.status == 409


def test_links_resolve_inside_the_root(files: VolumeFiles, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("host")
    root = Path(files.root)
    (root / "inside.txt").write_text("volume")
    os.symlink(str(outside), root / "abs")
    os.symlink("../outside.txt", root / "rel")
    os.symlink(str(tmp_path), root / "dir")
    os.symlink("/inside.txt", root / "in")
    for path in ("/abs", "/rel", "/dir/outside.txt"):
        with pytest.raises(ContentError) as info:
            files.open_file(path)
        assert info.value.status == 404
    assert b"".join(files.read_chunks(files.open_file("/in"))) == b"volume"
    # The last component is never followed for writes, and a parent link stays inside the root.
    with pytest.raises(ContentError):
        files.write("/abs", iter([b"x"]))
    with pytest.raises(ContentError):
        files.write("/dir/new.txt", iter([b"x"]))
    assert outside.read_text() == "host" and not (tmp_path / "new.txt").exists()
    assert files.stat("/abs").type == "symlink" and files.stat("/abs").target == str(outside)
    files.remove("/dir")
    assert tmp_path.is_dir() and outside.exists()


def test_bad_ids_and_modes_are_400(files: VolumeFiles) -> None:
    for kwargs in ({"uid": -1}, {"gid": 65536}, {"mode": 0o10000}):
        with pytest.raises(ContentError) as info:
            files.write("/f", iter([b""]), **kwargs)
        assert info.value.status == 400


def test_entry_wire_shape(files: VolumeFiles) -> None:
    wire = entry(files.write("/f", iter([b"x"])))
    assert set(wire) == {"name", "type", "path", "size", "mode", "uid", "gid", "atime", "mtime", "ctime"}
    assert wire["atime"].endswith("Z")


@pytest.mark.parametrize("path", ["relative", "/", "/proc", "/dev/shm", "/sys/x", "/.e2b/run", "/a/../b", 3])
def test_mount_paths_refused(path: object) -> None:
    with pytest.raises(ApiError) as info:
        check_mount_path(path)
    assert info.value.status == 400


def test_mount_path_accepted() -> None:
    assert check_mount_path("/mnt/data/") == "/mnt/data"
