"""A sandbox's disk and inode quota: what it writes stays within its own filesystem of the size metrics report."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LocalServer, _free_port, start_server, stop_server
from e2b import NotEnoughSpaceException, Sandbox

from local.sandbox_helpers import registry_key, run_as
from local.test_process_ownership import wait_until

# Small, so that filling it is quick; ext4's default ratio gives it 4096 inodes.
DISK_MB = 64
MIB = 1024 * 1024
# How long a killed sandbox's loop device may outlive it: while a launch under way holds its mount.
LOOP_RELEASE_SECONDS = 30.0


def host_free(home: Path) -> tuple[int, int]:
    """(free bytes, free inodes) of the host filesystem that holds the data directory."""
    st = os.statvfs(home)
    return st.f_bavail * st.f_frsize, st.f_favail


def loop_backing_files() -> list[str]:
    """The backing files of every attached loop device on the host."""
    found = []
    for device in Path("/sys/block").glob("loop*"):
        try:
            found.append((device / "loop" / "backing_file").read_text().strip())
        except OSError:
            continue
    return found


def host_mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


@pytest.fixture(scope="module")
def small_disk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = start_server(tmp_path_factory.mktemp("e2b-local-disk"), env={"E2B_LOCAL_DISK_MB": str(DISK_MB)})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def sandbox(small_disk_server: LocalServer) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=600, **small_disk_server.sdk)
    try:
        yield sbx
    finally:
        sbx.kill()


def test_writing_past_the_quota_fails_inside_and_the_host_keeps_its_space(
        small_disk_server: LocalServer, sandbox: Sandbox) -> None:
    other = Sandbox.create(timeout=600, **small_disk_server.sdk)
    try:
        free_before, _ = host_free(small_disk_server.home)
        code, out = run_as(sandbox, f"dd if=/dev/zero of=/root/fill bs=1M count={5 * DISK_MB}; rc=$?; sync; exit $rc")
        assert code != 0 and "No space left on device" in out
        code, out = run_as(sandbox, "dd if=/dev/zero of=/home/user/more bs=1M count=4; rc=$?; sync; exit $rc",
                        user="user")
        assert code != 0 and "No space left on device" in out
        # The agent's run directory is writable by sandbox root, and bounded too.
        code, out = run_as(sandbox, f"dd if=/dev/zero of=/.e2b/run/fill bs=1M count={DISK_MB}")
        assert code != 0 and "No space left on device" in out
        free_after, _ = host_free(small_disk_server.home)
        # Other work on this machine moves the host's free space too: allow one quota's worth of it.
        assert free_before - free_after <= 2 * DISK_MB * MIB

        # The other sandbox has its own disk, untouched by the full one.
        code, out = run_as(other, "dd if=/dev/zero of=/home/user/ok bs=1M count=8 status=none && sync && "
                               "wc -c < /home/user/ok", user="user")
        assert code == 0 and out.strip() == str(8 * MIB)

        run_as(sandbox, "rm -f /root/fill /home/user/more; sync")
        code, out = run_as(sandbox, "dd if=/dev/zero of=/home/user/again bs=1M count=16 && sync", user="user")
        assert code == 0, out
    finally:
        other.kill()


def test_many_small_files_hit_the_inode_limit(small_disk_server: LocalServer, sandbox: Sandbox) -> None:
    _, inodes_before = host_free(small_disk_server.home)
    script = (
        "import errno, os\n"
        "os.makedirs('/home/user/many', exist_ok=True)\n"
        "count = 0\n"
        "try:\n"
        "    for count in range(20000):\n"
        "        open(f'/home/user/many/{count}', 'w').close()\n"
        "except OSError as exc:\n"
        "    print('stopped', count, errno.errorcode[exc.errno])\n"
        "else:\n"
        "    print('created all')\n"
    )
    sandbox.files.write("/tmp/many.py", script)
    code, out = run_as(sandbox, "python3 /tmp/many.py", user="user")
    assert code == 0, out
    words = out.split()
    assert words[0] == "stopped" and words[2] == "ENOSPC", out
    assert int(words[1]) <= DISK_MB * MIB // 16384
    _, inodes_after = host_free(small_disk_server.home)
    assert inodes_before - inodes_after < 10000  # others on this machine create files too
    # Deleting gives the inodes back.
    code, out = run_as(sandbox, "rm -rf /home/user/many && touch /home/user/one && echo made", user="user")
    assert code == 0 and "made" in out


def test_files_write_past_the_quota_is_not_enough_space(sandbox: Sandbox) -> None:
    with pytest.raises(NotEnoughSpaceException):
        sandbox.files.write("/home/user/big.bin", b"\0" * (2 * DISK_MB * MIB))
    sandbox.files.remove("/home/user/big.bin")
    sandbox.files.write("/home/user/small.txt", "fits")
    assert sandbox.files.read("/home/user/small.txt") == "fits"


def test_metrics_report_the_sandboxs_own_disk(sandbox: Sandbox) -> None:
    code, out = run_as(sandbox, "python3 -c \"import os; s = os.statvfs('/'); "
                             "print(s.f_blocks * s.f_frsize, (s.f_blocks - s.f_bfree) * s.f_frsize)\"")
    assert code == 0, out
    total, _ = (int(v) for v in out.split())
    assert 0.8 * DISK_MB * MIB <= total <= DISK_MB * MIB  # the size set, less ext4's own tables
    metrics = sandbox.get_metrics()
    assert metrics and metrics[-1].disk_total == total
    assert 0 < metrics[-1].disk_used < DISK_MB * MIB // 4


def test_kill_releases_the_disk_while_other_sandboxes_run(small_disk_server: LocalServer) -> None:
    args = small_disk_server.sdk
    first = Sandbox.create(**args)
    directory = small_disk_server.home / "sandboxes" / registry_key(small_disk_server.home, first.sandbox_id)
    # Started after the first, so that its mount namespace began as a copy of the host's, first's disk included.
    second = Sandbox.create(**args)
    try:
        assert str(directory / "disk") in host_mounts()
        assert str(directory / "disk.img") in loop_backing_files()
        first.kill()
        assert not directory.exists()
        assert not [m for m in host_mounts() if m.startswith(str(directory))]
        # A sandbox the pool boots meanwhile holds a copy of the disk's mount until it has made its own
        # root (as `second` did): the loop device goes with the last copy, moments after the kill.
        assert wait_until(lambda: not [f for f in loop_backing_files() if f.startswith(str(directory))],
                          LOOP_RELEASE_SECONDS), loop_backing_files()
        assert run_as(second, "echo alive")[1].strip() == "alive"
    finally:
        second.kill()


def test_paused_files_survive_a_machine_restart(tmp_path: Path) -> None:
    home, port = tmp_path / "home", _free_port()
    server = start_server(home, port, env={"E2B_LOCAL_DISK_MB": str(DISK_MB)})
    args = server.sdk
    sandbox = Sandbox.create(timeout=600, **args)
    try:
        sandbox.files.write("/home/user/kept.txt", "on its own disk")
        assert sandbox.pause(mode="filesystem") is True
        disk = home / "sandboxes" / registry_key(home, sandbox.sandbox_id) / "disk"
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        # What a restart of the machine leaves: the image, no mount and no loop device.
        assert os.system(f"umount {disk}") == 0
        assert not os.path.ismount(disk)
        server = start_server(home, port, env={"E2B_LOCAL_DISK_MB": str(DISK_MB)})
        resumed = Sandbox.connect(sandbox.sandbox_id, **args)
        assert resumed.files.read("/home/user/kept.txt") == "on its own disk"
        code, out = run_as(resumed, "dd if=/dev/zero of=/root/fill bs=1M count=128; rc=$?; sync; exit $rc")
        assert code != 0 and "No space left on device" in out
    finally:
        if server.process.poll() is not None:  # failed while it was down: it cleans up its sandboxes
            server = start_server(home, port, env={"E2B_LOCAL_DISK_MB": str(DISK_MB)})
        stop_server(server)


def test_a_snapshot_must_fit_the_disk(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_server(home, env={"E2B_LOCAL_DISK_MB": str(DISK_MB)})
    try:
        args = server.sdk
        sandbox = Sandbox.create(**args)
        code, out = run_as(sandbox, "dd if=/dev/urandom of=/home/user/data bs=1M count=40 && sync", user="user")
        assert code == 0, out
        snapshot = sandbox.create_snapshot()
        # The same server copies it into a new sandbox of the same size...
        restored = Sandbox.create(snapshot.snapshot_id, **args)
        assert run_as(restored, "wc -c < /home/user/data")[1].strip() == str(40 * MIB)
        restored.kill()
        sandbox.kill()
    finally:
        stop_server(server)
    # ...but a server with smaller disks refuses it rather than overfilling one.
    server = start_server(home, env={"E2B_LOCAL_DISK_MB": "32"})
    try:
        with pytest.raises(Exception, match="do not fit"):
            Sandbox.create(snapshot.snapshot_id, **server.sdk)
    finally:
        stop_server(server)
