"""Volumes through the real SDK: persistence across kills and restarts, sharing, the size limit, the content API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LocalServer, exported, start_server, stop_server
from e2b import Sandbox, Volume
from e2b.exceptions import (
    AuthenticationException,
    SandboxException,
    VolumeException,
    VolumeNotFoundException,
    VolumePathNotFoundException,
)

# Small, so that filling a volume is quick.
VOLUME_MB = 32
SERVER_ENV = {"E2B_LOCAL_VOLUME_MB": str(VOLUME_MB), "E2B_LOCAL_POOL_SIZE": "0"}


class Servers:
    """This module's own server, which a test may restart on the same data directory and port."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.server = start_server(home, env=SERVER_ENV)

    def restart(self) -> LocalServer:
        port = int(self.server.url.rsplit(":", 1)[1])
        self.server.process.terminate()
        self.server.process.wait(timeout=60)
        self.server = start_server(self.home, port=port, env=SERVER_ENV)
        return self.server

    def close(self) -> None:
        stop_server(self.server)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    found = Servers(tmp_path_factory.mktemp("e2b-local-volumes"))
    try:
        # A restart keeps the port and the key: the environment stays right for the whole module.
        with exported(found.server.env):
            yield found
    finally:
        found.close()


@pytest.fixture
def volume(servers: Servers) -> Iterator[Volume]:
    vol = Volume.create("vol-" + uuid.uuid4().hex[:12])
    try:
        yield vol
    finally:
        Volume.destroy(vol.volume_id)


def test_written_by_one_sandbox_read_by_another_after_kill_and_restart(servers: Servers, volume: Volume) -> None:
    first = Sandbox.create(volume_mounts={"/mnt/data": volume})
    try:
        result = first.commands.run("echo kept > /mnt/data/note.txt && mkdir /mnt/data/sub && "
                                    "echo root-kept > /mnt/data/sub/root.txt", user="user")
        assert result.exit_code == 0
        assert first.commands.run("echo by-root > /mnt/data/by-root.txt", user="root").exit_code == 0
    finally:
        first.kill()
    servers.restart()
    again = Volume.connect(volume.volume_id)
    assert again.name == volume.name
    assert again.read_file("/note.txt") == "kept\n"
    second = Sandbox.create(volume_mounts={"/data": volume.name})
    try:
        assert second.commands.run("cat /data/note.txt /data/sub/root.txt /data/by-root.txt").stdout == \
            "kept\nroot-kept\nby-root\n"
        owners = second.commands.run("stat -c '%U %G %n' /data /data/note.txt /data/by-root.txt").stdout
        assert owners.splitlines() == ["user user /data", "user user /data/note.txt", "root root /data/by-root.txt"]
        assert second.get_info().volume_mounts == [{"name": volume.name, "path": "/data"}]
    finally:
        second.kill()


def test_two_sandboxes_share_a_mounted_volume(servers: Servers, volume: Volume) -> None:
    a = Sandbox.create(volume_mounts={"/mnt/shared": volume})
    b = Sandbox.create(volume_mounts={"/shared": volume})
    try:
        assert a.commands.run("echo from-a > /mnt/shared/a.txt").exit_code == 0
        assert b.commands.run("cat /shared/a.txt").stdout == "from-a\n"
        assert b.commands.run("echo from-b > /shared/b.txt").exit_code == 0
        assert a.commands.run("cat /mnt/shared/b.txt").stdout == "from-b\n"
        assert sorted(e.name for e in volume.list("/")) == ["a.txt", "b.txt"]
    finally:
        a.kill()
        b.kill()


def test_size_limit_is_enforced_and_reported(servers: Servers, volume: Volume) -> None:
    sbx = Sandbox.create(volume_mounts={"/mnt/data": volume})
    try:
        size_kb = int(sbx.commands.run("df --output=size -k /mnt/data | tail -1").stdout)
        assert (VOLUME_MB - 8) * 1024 <= size_kb <= VOLUME_MB * 1024
        filled = sbx.commands.run(f"dd if=/dev/zero of=/mnt/data/big bs=1M count={VOLUME_MB * 2} 2>&1; echo rc=$?",
                                  timeout=120)
        assert "No space left on device" in filled.stdout
        assert "rc=1" in filled.stdout
        with pytest.raises(VolumeException, match="507"):
            volume.write_file("/more.bin", b"x" * (4 * 1024 * 1024))
        # Space freed in the sandbox is usable again through the content API.
        assert sbx.commands.run("rm /mnt/data/big").exit_code == 0
        assert volume.write_file("/more.bin", b"x" * (4 * 1024 * 1024)).size == 4 * 1024 * 1024
    finally:
        sbx.kill()


def test_content_api(servers: Servers, volume: Volume) -> None:
    made = volume.make_dir("/a/b/c", force=True)
    assert (made.type.value, made.path, made.uid, made.gid) == ("directory", "/a/b/c", 1000, 1000)
    with pytest.raises(VolumePathNotFoundException):
        volume.make_dir("/missing/child")
    written = volume.write_file("/a/b/c/data.bin", b"\x00\x01binary", mode=0o600, uid=0, gid=0)
    assert (written.size, written.mode, written.uid, written.gid) == (8, 0o600, 0, 0)
    volume.write_file("/new/parent/file.txt", "text", force=True)
    assert volume.read_file("/a/b/c/data.bin", format="bytes") == b"\x00\x01binary"
    assert b"".join(volume.read_file("/new/parent/file.txt", format="stream")) == b"text"
    assert [e.path for e in volume.list("/a")] == ["/a/b"]
    assert [e.path for e in volume.list("/a", depth=3)] == ["/a/b", "/a/b/c", "/a/b/c/data.bin"]
    info = volume.get_info("/a/b/c/data.bin")
    assert info.name == "data.bin" and info.type.value == "file"
    assert volume.exists("/a/b") and not volume.exists("/nope")
    updated = volume.update_metadata("/a/b/c/data.bin", uid=1000, gid=1000, mode=0o640)
    assert (updated.uid, updated.gid, updated.mode) == (1000, 1000, 0o640)
    volume.remove("/a")
    assert not volume.exists("/a/b/c/data.bin")
    with pytest.raises(VolumePathNotFoundException):
        volume.remove("/a")
    with pytest.raises(VolumePathNotFoundException):
        volume.read_file("/a/b/c/data.bin")
    # A sandbox sees what the API wrote, with the owners the API gave.
    sbx = Sandbox.create(volume_mounts={"/mnt/data": volume})
    try:
        assert sbx.commands.run("cat /mnt/data/new/parent/file.txt").stdout == "text"
        assert sbx.commands.run("stat -c %U /mnt/data/new/parent/file.txt").stdout.strip() == "user"
    finally:
        sbx.kill()


def test_links_in_a_volume_never_reach_the_host(servers: Servers, volume: Volume) -> None:
    sbx = Sandbox.create(volume_mounts={"/mnt/data": volume})
    try:
        setup = ("ln -s /etc /mnt/data/etc-link && ln -s ../../../../../../etc/hostname /mnt/data/up-link && "
                 "ln -s /proc/self/root/etc/passwd /mnt/data/proc-link && echo inside > /mnt/data/inside.txt && "
                 "ln -s /inside.txt /mnt/data/abs-link")
        assert sbx.commands.run(setup).exit_code == 0
    finally:
        sbx.kill()
    # Links resolve inside the volume's root: what they name on the host is never read.
    for path in ("/etc-link/passwd", "/up-link", "/proc-link", "/../../../../etc/passwd"):
        with pytest.raises(VolumePathNotFoundException):
            volume.read_file(path)
    assert volume.read_file("/abs-link") == "inside\n"
    link = volume.get_info("/etc-link")
    assert (link.type.value, link.target) == ("symlink", "/etc")
    # Writing through a link writes neither through it nor out of the volume.
    with pytest.raises(VolumeException):
        volume.write_file("/etc-link", "x")
    with pytest.raises(VolumePathNotFoundException):
        volume.write_file("/etc-link/e2b-local-escape", "x")
    assert not Path("/etc/e2b-local-escape").exists()
    volume.remove("/etc-link")
    assert Path("/etc/passwd").exists()


def test_destroy_while_mounted_and_unknown_volumes(servers: Servers) -> None:
    vol = Volume.create("busy-" + uuid.uuid4().hex[:8])
    sbx = Sandbox.create(volume_mounts={"/mnt/data": vol})
    try:
        with pytest.raises(VolumeException, match="mounted by sandbox"):
            Volume.destroy(vol.volume_id)
        assert vol.volume_id in [v.volume_id for v in Volume.list()]
    finally:
        sbx.kill()
    assert Volume.destroy(vol.volume_id) is True
    assert Volume.destroy(vol.volume_id) is False
    assert vol.volume_id not in [v.volume_id for v in Volume.list()]
    with pytest.raises(VolumeNotFoundException):
        Volume.get_info(vol.volume_id)
    with pytest.raises(VolumeNotFoundException):
        Volume.connect("nosuchvolume")
    with pytest.raises(SandboxException, match="not found"):
        Sandbox.create(volume_mounts={"/mnt/data": "no-such-volume"})
    # The content API wants the volume's own token.
    with pytest.raises(AuthenticationException):
        Volume(vol.volume_id, vol.name, token="wrong").read_file("/x")


def test_create_refuses_bad_names_and_mount_paths(servers: Servers, volume: Volume) -> None:
    with pytest.raises(VolumeException, match="409"):
        Volume.create(volume.name)
    with pytest.raises(VolumeException, match="400"):
        Volume.create("bad name/with slash")
    for path in ("relative", "/", "/proc/x", "/.e2b/run"):
        with pytest.raises(SandboxException, match="400"):
            Sandbox.create(volume_mounts={path: volume})
