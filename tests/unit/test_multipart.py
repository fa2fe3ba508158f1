"""The agent's streaming multipart reader and Content-Disposition parser (what `/files` uploads go through)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from e2b_local.agent.multipart import MAX_PART_HEADERS, MultipartError, MultipartReader, disposition_params


async def _feed(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _read(body: bytes, boundary: bytes, size: int = 4) -> list[tuple[dict[str, str], bytes]]:
    async def parts() -> list[tuple[dict[str, str], bytes]]:
        reader = MultipartReader(_feed(body, size), boundary)
        found = []
        while (headers := await reader.next_part()) is not None:
            found.append((headers, b"".join([chunk async for chunk in reader.part_chunks()])))
        # Past the end it stays at the end.
        assert await reader.next_part() is None
        return found

    return asyncio.run(parts())


def test_the_sdk_upload_of_several_files() -> None:
    # What the SDK's write_files sends: one `file` part per file, its path as the filename.
    request = httpx.Request("POST", "http://sandbox/files", files=[
        ("file", ("/home/user/a b.txt", b"one")), ("file", ("sub/dir/c.bin", bytes(range(256)) * 10))])
    boundary = request.headers["content-type"].split("boundary=", 1)[1].encode()
    parts = _read(request.read(), boundary, size=7)
    assert [disposition_params(h["content-disposition"]) for h, _ in parts] == [
        {"name": "file", "filename": "/home/user/a b.txt"}, {"name": "file", "filename": "sub/dir/c.bin"}]
    assert [data for _, data in parts] == [b"one", bytes(range(256)) * 10]


def test_a_part_without_headers_and_transport_padding() -> None:
    body = b"--XYZ   \r\n\r\nno headers\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\n\r\n--XYZ--\r\nepilogue"
    parts = _read(body, b"XYZ", size=1)
    assert parts == [({}, b"no headers"), ({"content-type": "text/plain"}, b"")]


def test_a_body_that_only_looks_like_a_delimiter() -> None:
    # The delimiter is CRLF + "--" + boundary: the boundary inside a line, or without "--", is data.
    data = b"--XYZ not at a line start\r\nXYZ\r\n-XYZ"
    body = b"--XYZ\r\n\r\n" + data + b"\r\n--XYZ--"
    assert _read(body, b"XYZ", size=3) == [({}, data)]


def test_non_utf8_headers_are_read_as_latin1() -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="caf\xe9"\r\n\r\nx\r\n--b--'
    (headers, data), = _read(body, b"b")
    assert disposition_params(headers["content-disposition"])["filename"] == "café"
    assert data == b"x"


@pytest.mark.parametrize("body", [
    b"",
    b"preamble only",
    b"--b\r\n",
    b"--b\r\nContent-Type: text/plain\r\n",
    b"--b\r\n\r\npart without its closing delimiter",
])
def test_truncated_bodies_are_errors(body: bytes) -> None:
    with pytest.raises(MultipartError, match="the multipart body ended early"):
        _read(body, b"b")


def test_part_headers_are_bounded() -> None:
    body = b"--b\r\nX-Long: " + b"a" * (MAX_PART_HEADERS + 10)
    with pytest.raises(MultipartError, match="part headers are too large"):
        _read(body, b"b", size=4096)


@pytest.mark.parametrize(("value", "expected"), [
    ('form-data; name="file"; filename="/home/user/x.txt"', {"name": "file", "filename": "/home/user/x.txt"}),
    # Paths are kept as they are: no stripping to a basename, no normalisation.
    ('form-data; name=file; filename=../../etc/passwd', {"name": "file", "filename": "../../etc/passwd"}),
    (r'form-data; name="file"; filename="a \"quoted\" name; with semicolon"',
     {"name": "file", "filename": 'a "quoted" name; with semicolon'}),
    ("form-data; NAME=file ; Filename = x", {"name": "file", "filename": "x"}),
    ("form-data; name=\"file\"; filename=\"plain\"; filename*=UTF-8''%2Fhome%2Fuser%2F%E2%82%AC.txt",
     {"name": "file", "filename": "/home/user/€.txt", "filename*": "UTF-8''%2Fhome%2Fuser%2F%E2%82%AC.txt"}),
    # An undecodable extended value leaves the plain filename in place.
    ("form-data; filename=plain; filename*=UTF-8''%FF", {"filename": "plain", "filename*": "UTF-8''%FF"}),
    ("form-data; garbage; name=file", {"name": "file"}),
    ("form-data", {}),
    ('multipart/form-data; boundary="a:b=c"', {"boundary": "a:b=c"}),
])
def test_content_disposition_parameters(value: str, expected: dict[str, str]) -> None:
    assert disposition_params(value) == expected
