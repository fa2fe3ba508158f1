"""The pure parts of the agent's file handling: multipart and gzip bodies, signatures, mode strings."""

from __future__ import annotations

import asyncio
import gzip
import stat
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest
from e2b.sandbox.signature import get_signature

from e2b_local.agent.entries import go_mode_string
from e2b_local.agent.files import _gunzip
from e2b_local.agent.multipart import MultipartError, MultipartReader, disposition_params
from e2b_local.control.auth import sign


async def _feed(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def _parts(body: bytes, boundary: bytes, size: int) -> list[tuple[dict[str, str], bytes]]:
    reader = MultipartReader(_feed(body, size), boundary)
    parts = []
    while (headers := await reader.next_part()) is not None:
        parts.append((headers, b"".join([chunk async for chunk in reader.part_chunks()])))
    return parts


def _sdk_multipart(files: list[tuple[str, tuple[str, bytes]]]) -> tuple[bytes, bytes]:
    request = httpx.Request("POST", "http://sandbox/files", files=files)
    boundary = request.headers["content-type"].split("boundary=", 1)[1].encode()
    return request.read(), boundary


@pytest.mark.parametrize("size", [1, 3, 7, 64, 1 << 20])
def test_multipart_reader_across_chunk_boundaries(size: int) -> None:
    tricky = b"data\r\n--almost a boundary\r\n-" * 50
    body, boundary = _sdk_multipart([
        ("file", ("/home/user/dir/a.txt", b"first")),
        ("file", ("rel/ative/b.bin", tricky)),
        ("file", ("/home/user/empty", b"")),
    ])
    parts = asyncio.run(_parts(body, boundary, size))
    filenames = [disposition_params(h["content-disposition"])["filename"] for h, _ in parts]
    assert filenames == ["/home/user/dir/a.txt", "rel/ative/b.bin", "/home/user/empty"]
    assert [data for _, data in parts] == [b"first", tricky, b""]
    assert parts[0][0]["content-type"] == "text/plain"


def test_multipart_reader_skips_unread_parts_and_preamble() -> None:
    body, boundary = _sdk_multipart([("other", ("x", b"skipped")), ("file", ("/f", b"kept"))])
    body = b"a preamble to ignore\r\n" + body

    async def second_part() -> bytes:
        reader = MultipartReader(_feed(body, 5), boundary)
        assert await reader.next_part() is not None  # left unread
        assert await reader.next_part() is not None
        data = b"".join([chunk async for chunk in reader.part_chunks()])
        assert await reader.next_part() is None
        return data

    assert asyncio.run(second_part()) == b"kept"


def test_multipart_reader_rejects_truncated_bodies() -> None:
    body, boundary = _sdk_multipart([("file", ("/f", b"0123456789"))])
    with pytest.raises(MultipartError):
        asyncio.run(_parts(body[:-30], boundary, 8))


def test_content_disposition_keeps_paths() -> None:
    params = disposition_params('form-data; name="file"; filename="/home/user/my \\"dir\\"/a;b.txt"')
    assert params == {"name": "file", "filename": '/home/user/my "dir"/a;b.txt'}
    assert disposition_params("form-data; name=file; filename=/tmp/x")["filename"] == "/tmp/x"
    extended = disposition_params("form-data; name=file; filename=x; filename*=UTF-8''%2Fhome%2Fuser%2F%C3%A9.txt")
    assert extended["filename"] == "/home/user/é.txt"
    assert disposition_params('multipart/form-data; boundary="abc def"')["boundary"] == "abc def"


@pytest.mark.parametrize("username", [None, "root"])
@pytest.mark.parametrize("expires_in", [None, 120])
def test_signature_matches_the_sdk(username: str | None, expires_in: int | None) -> None:
    token = "0123456789abcdef0123456789abcdef"
    sdk = get_signature("/home/user/a b.txt", "write", username, token, expires_in)
    ours = sign("/home/user/a b.txt", "write", username or "", token, sdk["expiration"])
    assert ours == sdk["signature"]
    assert ours != sign("/home/user/a b.txt", "read", username or "", token, sdk["expiration"])


def test_gunzip_streams_members_and_detects_truncation() -> None:
    body = gzip.compress(b"first member ") + gzip.compress(b"x" * 500_000)

    async def collect(data: bytes, size: int) -> bytes:
        return b"".join([chunk async for chunk in _gunzip(_feed(data, size))])

    assert asyncio.run(collect(body, 9)) == b"first member " + b"x" * 500_000
    with pytest.raises(zlib.error):
        asyncio.run(collect(body[:-12], 1000))


@pytest.mark.parametrize(("mode", "expected"), [
    (stat.S_IFREG | 0o644, "-rw-r--r--"),
    (stat.S_IFDIR | 0o755, "drwxr-xr-x"),
    (stat.S_IFLNK | 0o777, "Lrwxrwxrwx"),
    (stat.S_IFDIR | stat.S_ISVTX | 0o777, "dtrwxrwxrwx"),
    (stat.S_IFCHR | 0o666, "Dcrw-rw-rw-"),
    (stat.S_IFREG | stat.S_ISUID | 0o755, "urwxr-xr-x"),
    (stat.S_IFIFO | 0o600, "prw-------"),
])
def test_permissions_string_matches_go(mode: int, expected: str) -> None:
    assert go_mode_string(mode) == expected
