"""envd's filesystem service and `/files` routes through the real asynchronous SDK (`AsyncSandbox`)."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from e2b import (
    AsyncSandbox,
    FileNotFoundException,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    SandboxException,
    TimeoutException,
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def asbx(e2b_server) -> AsyncIterator[AsyncSandbox]:
    sandbox = await AsyncSandbox.create()
    yield sandbox
    await sandbox.kill()


@pytest_asyncio.fixture(loop_scope="session")
async def workdir(asbx: AsyncSandbox) -> str:
    """A fresh directory under the default user's home."""
    path = f"/home/user/at-{uuid.uuid4().hex[:8]}"
    assert await asbx.files.make_dir(path)
    return path


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_write_read_formats(asbx: AsyncSandbox, workdir: str) -> None:
    await asbx.files.write(f"{workdir}/t.txt", "async text")
    assert await asbx.files.read(f"{workdir}/t.txt") == "async text"
    await asbx.files.write(f"{workdir}/b.bin", b"\x00\x01\x02")
    assert await asbx.files.read(f"{workdir}/b.bin", format="bytes") == bytearray(b"\x00\x01\x02")
    async with await asbx.files.read(f"{workdir}/b.bin", format="stream") as stream:
        assert b"".join([chunk async for chunk in stream]) == b"\x00\x01\x02"


async def test_streamed_gzip_and_octet_uploads(asbx: AsyncSandbox, workdir: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"part{i};".encode()

    await asbx.files.write(f"{workdir}/stream.txt", chunks())
    await asbx.files.write(f"{workdir}/gz.txt", "zipped", gzip=True)
    await asbx.files.write(f"{workdir}/io.txt", io.BytesIO(b"file object"), use_octet_stream=True)
    assert await asbx.files.read(f"{workdir}/stream.txt") == "part0;part1;part2;part3;part4;"
    assert await asbx.files.read(f"{workdir}/gz.txt") == "zipped"
    assert await asbx.files.read(f"{workdir}/io.txt") == "file object"


async def test_write_files_and_metadata(asbx: AsyncSandbox, workdir: str) -> None:
    infos = await asbx.files.write_files(
        [{"path": f"{workdir}/x/1.txt", "data": "1"}, {"path": f"{workdir}/y/z/2.txt", "data": "2"}],
        metadata={"tag": "batch"},
    )
    assert [i.path for i in infos] == [f"{workdir}/x/1.txt", f"{workdir}/y/z/2.txt"]
    assert (await asbx.files.get_info(f"{workdir}/y/z/2.txt")).metadata == {"tag": "batch"}


async def test_entries(asbx: AsyncSandbox, workdir: str) -> None:
    await asbx.files.write(f"{workdir}/d/f.txt", "abc")
    assert await asbx.files.exists(f"{workdir}/d/f.txt")
    assert not await asbx.files.exists(f"{workdir}/nope")
    info = await asbx.files.get_info(f"{workdir}/d/f.txt")
    assert (info.type, info.size, info.owner) == (FileType.FILE, 3, "user")
    assert [e.name for e in await asbx.files.list(workdir)] == ["d"]
    assert sorted(e.name for e in await asbx.files.list(workdir, depth=2)) == ["d", "f.txt"]
    assert await asbx.files.make_dir(f"{workdir}/new/deep") is True
    assert await asbx.files.make_dir(f"{workdir}/new/deep") is False
    moved = await asbx.files.rename(f"{workdir}/d/f.txt", f"{workdir}/new/g.txt")
    assert moved.path == f"{workdir}/new/g.txt"
    await asbx.files.remove(f"{workdir}/new")
    assert not await asbx.files.exists(f"{workdir}/new")


async def test_errors(asbx: AsyncSandbox, workdir: str) -> None:
    with pytest.raises(FileNotFoundException):
        await asbx.files.read(f"{workdir}/missing")
    with pytest.raises(FileNotFoundException):
        await asbx.files.get_info(f"{workdir}/missing")
    await asbx.files.write(f"{workdir}/file", "f")
    with pytest.raises(InvalidArgumentException):
        await asbx.files.list(f"{workdir}/file")
    with pytest.raises(SandboxException, match=r"(?i)permission denied"):
        await asbx.files.read("/etc/shadow")
    assert await asbx.files.read("/etc/hostname", user="root")


async def test_watch_dir_recursive_stream(asbx: AsyncSandbox, workdir: str) -> None:
    events: list[FilesystemEvent] = []
    exits: list[Exception | None] = []
    handle = await asbx.files.watch_dir(workdir, events.append, on_exit=exits.append, recursive=True,
                                        include_entry=True)
    await asbx.files.make_dir(f"{workdir}/sub")
    await asbx.files.write(f"{workdir}/sub/inner.txt", "i")
    await asbx.files.write(f"{workdir}/top.txt", "t")
    await asbx.files.write(f"{workdir}/n1/n2/deep.txt", "made with its directories")
    await asbx.files.remove(f"{workdir}/top.txt")
    seen = lambda: {(e.type, e.name) for e in events}  # noqa: E731
    await _until(lambda: (FilesystemEventType.REMOVE, "top.txt") in seen())
    assert (FilesystemEventType.CREATE, "sub") in seen()
    assert (FilesystemEventType.CREATE, "sub/inner.txt") in seen()
    assert (FilesystemEventType.WRITE, "top.txt") in seen()
    assert (FilesystemEventType.CREATE, "n1/n2/deep.txt") in seen()
    inner = next(e for e in events if e.name == "sub/inner.txt" and e.type == FilesystemEventType.CREATE)
    assert inner.entry is not None and inner.entry.type == FileType.FILE
    removed = next(e for e in events if e.type == FilesystemEventType.REMOVE)
    assert removed.entry is None
    await handle.stop()
    assert exits == [None]


async def test_watch_dir_timeout_ends_the_stream(asbx: AsyncSandbox, workdir: str) -> None:
    exits: list[Exception | None] = []
    handle = await asbx.files.watch_dir(workdir, lambda _e: None, on_exit=exits.append, timeout=1)
    await _until(lambda: bool(exits), timeout=10)
    assert isinstance(exits[0], TimeoutException)
    await handle.stop()


async def test_watch_dir_missing_directory(asbx: AsyncSandbox, workdir: str) -> None:
    with pytest.raises(FileNotFoundException):
        await asbx.files.watch_dir(f"{workdir}/missing", lambda _e: None)
