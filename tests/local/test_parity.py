"""Behaviour that matches E2B's own sandboxes, through the real SDK: boot ids, `python`, writes as
`user` where only root may write, the watch events of a write, and a kill during a command."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import AsyncSandbox, FilesystemEventType, Sandbox, SandboxException, SandboxNotRunningException

BOOT_ID = "/proc/sys/kernel/random/boot_id"


@pytest.fixture(scope="module")
def sbx(e2b_server) -> Iterator[Sandbox]:
    sandbox = Sandbox.create()
    yield sandbox
    sandbox.kill()


def _boot_id(sandbox: Sandbox) -> str:
    return sandbox.commands.run(f"cat {BOOT_ID}").stdout.strip()


# -- boot id ---------------------------------------------------------------------------------------

def test_each_sandbox_has_its_own_boot_id(sbx: Sandbox) -> None:
    other = Sandbox.create()
    try:
        mine, theirs = _boot_id(sbx), _boot_id(other)
    finally:
        other.kill()
    host = Path(BOOT_ID).read_text().strip()
    assert len({mine, theirs, host}) == 3
    assert str(uuid.UUID(mine)) == mine
    assert _boot_id(sbx) == mine  # stable while the sandbox runs
    # Read-only, even for the sandbox's root.
    assert sbx.commands.run(f"echo x > {BOOT_ID} 2>/dev/null || echo refused", user="root").stdout == "refused\n"


def test_boot_id_changes_at_a_cold_boot_only(e2b_server) -> None:
    sandbox = Sandbox.create()
    try:
        first = _boot_id(sandbox)
        assert sandbox.pause() is True  # memory kept: the same boot
        assert _boot_id(Sandbox.connect(sandbox.sandbox_id)) == first
        assert sandbox.pause(mode="filesystem") is True  # files only: the next start is a new boot
        second = _boot_id(Sandbox.connect(sandbox.sandbox_id))
        assert second != first and str(uuid.UUID(second)) == second
    finally:
        sandbox.kill()


# -- python ----------------------------------------------------------------------------------------

def test_python_is_python3(sbx: Sandbox) -> None:
    result = sbx.commands.run("python -c 'import sys; print(sys.version_info[0])' && python --version")
    assert result.stdout.splitlines()[0] == "3"
    assert result.stdout.splitlines()[1].startswith("Python 3.")


# -- files.write as `user` where only root may write -----------------------------------------------

def _owners(sandbox: Sandbox, *paths: str) -> list[str]:
    return sandbox.commands.run("stat -c %U:%G:%a " + " ".join(paths)).stdout.split()


def test_write_where_user_may_not_write_hands_the_file_over(sbx: Sandbox) -> None:
    name = uuid.uuid4().hex[:8]
    info = sbx.files.write(f"/opt/{name}.txt", "in /opt")
    assert info.path == f"/opt/{name}.txt"
    assert sbx.files.read(f"/opt/{name}.txt") == "in /opt"
    assert _owners(sbx, f"/opt/{name}.txt") == ["user:user:644"]
    # Created parents belong to the user; the directories that existed keep their owner.
    sbx.files.write(f"/{name}/a/b/c.txt", "deep")
    assert _owners(sbx, "/", f"/{name}", f"/{name}/a", f"/{name}/a/b", f"/{name}/a/b/c.txt") == [
        "root:root:755", "user:user:755", "user:user:755", "user:user:755", "user:user:644"]
    # An existing root file is taken over, keeping its mode.
    sbx.commands.run(f"echo old > /etc/{name}.conf && chmod 600 /etc/{name}.conf", user="root")
    sbx.files.write(f"/etc/{name}.conf", "new")
    assert _owners(sbx, f"/etc/{name}.conf") == ["user:user:600"]
    assert sbx.files.read(f"/etc/{name}.conf") == "new"
    # As root, everything written belongs to root.
    sbx.files.write(f"/{name}-root/x.txt", "r", user="root")
    assert _owners(sbx, f"/{name}-root", f"/{name}-root/x.txt") == ["root:root:755", "root:root:644"]
    # A directory is still no file.
    with pytest.raises(SandboxException, match="is a directory"):
        sbx.files.write("/etc", "x")


async def test_write_as_user_into_root_directories_async(e2b_server) -> None:
    sandbox = await AsyncSandbox.create()
    try:
        await sandbox.files.write("/0/x", "zero")
        assert await sandbox.files.read("/0/x") == "zero"
        info = await sandbox.files.get_info("/0/x")
        assert (info.owner, info.group) == ("user", "user")
        assert (await sandbox.files.get_info("/0")).owner == "user"
        entries = await sandbox.files.write_files([{"path": "/usr/local/share/p/one", "data": "1"},
                                                   {"path": "/usr/local/share/p/two", "data": b"2"}])
        assert [e.path for e in entries] == ["/usr/local/share/p/one", "/usr/local/share/p/two"]
        result = await sandbox.commands.run("stat -c %U /usr/local/share/p /usr/local/share/p/two /usr/local/share")
        assert result.stdout.split() == ["user", "user", "root"]
    finally:
        await sandbox.kill()


# -- watch events of a write -----------------------------------------------------------------------

def test_write_under_a_watched_directory_creates_chmods_and_writes(sbx: Sandbox) -> None:
    directory = f"/home/user/watched-{uuid.uuid4().hex[:8]}"
    sbx.files.make_dir(directory)
    handle = sbx.files.watch_dir(directory)
    try:
        sbx.files.write(f"{directory}/new.txt", "data")
        sbx.files.write(f"/opt/{uuid.uuid4().hex[:8]}", "elsewhere")  # not watched
        events = []
        for _ in range(50):
            events += handle.get_new_events()
            if FilesystemEventType.WRITE in [e.type for e in events]:
                break
            threading.Event().wait(0.1)
        kinds = [e.type for e in events if e.name == "new.txt"]
        assert kinds[:3] == [FilesystemEventType.CREATE, FilesystemEventType.CHMOD, FilesystemEventType.WRITE]
    finally:
        handle.stop()


async def test_write_under_a_watched_directory_async(e2b_server) -> None:
    sandbox = await AsyncSandbox.create()
    try:
        seen: list[tuple[str, FilesystemEventType]] = []
        wrote = asyncio.Event()

        def on_event(event) -> None:
            seen.append((event.name, event.type))
            if event.type == FilesystemEventType.WRITE:
                wrote.set()

        handle = await sandbox.files.watch_dir("/home/user", on_event)
        await sandbox.files.write("/home/user/w.txt", "w")
        await asyncio.wait_for(wrote.wait(), 30)
        await handle.stop()
        assert [t for n, t in seen if n == "w.txt"][:3] == [
            FilesystemEventType.CREATE, FilesystemEventType.CHMOD, FilesystemEventType.WRITE]
    finally:
        await sandbox.kill()


# -- killed during a command -----------------------------------------------------------------------

def test_kill_during_a_streaming_command_reports_the_sandbox_killed(e2b_server) -> None:
    sandbox = Sandbox.create()
    started = threading.Event()

    def on_stdout(line: str) -> None:
        started.set()

    killer = threading.Thread(target=lambda: started.wait(60) and sandbox.kill())
    killer.start()
    try:
        with pytest.raises(SandboxNotRunningException, match="killed or reached its end of life"):
            sandbox.commands.run("echo started; sleep 120", on_stdout=on_stdout, timeout=100)
    finally:
        killer.join()
        Sandbox.kill(sandbox.sandbox_id)


async def test_kill_during_a_streaming_command_async(e2b_server) -> None:
    sandbox = await AsyncSandbox.create()
    started = asyncio.Event()
    handle = await sandbox.commands.run("echo started; sleep 120", background=True,
                                        on_stdout=lambda _line: started.set())
    await asyncio.wait_for(started.wait(), 60)
    await sandbox.kill()
    with pytest.raises(SandboxNotRunningException, match="killed or reached its end of life"):
        await handle.wait()
