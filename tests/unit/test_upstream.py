"""The proxy's reading of an agent's answer: bodies arrive whole, in as few pieces as they were written.

Each test serves a crafted answer from a real Unix-socket server, written in the given writes, and
reads it through `AgentUpstream` as the router does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from e2b_local.control.fleet.upstream import AgentUpstream, UpstreamError

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"


async def answer(tmp_path: Path, writes: Sequence[bytes], method: str = "POST") -> tuple[list[tuple[bytes, bool]],
                                                                                         bool]:
    """The pieces of the body an agent answering with `writes` gives, and whether the connection is reusable."""
    path = str(tmp_path / "agent.sock")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        for data in writes:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.05)  # each write arrives on its own
        await reader.read()  # until the proxy closes its end
        writer.close()

    server = await asyncio.start_unix_server(serve, path)
    try:
        upstream = AgentUpstream(path)
        response = await upstream.request(method, "/execute", [], b"{}", 2)
        pieces = [piece async for piece in response.pieces()]
        reusable = response.keep_alive
        response.release()
        upstream.close_idle()
        return pieces, reusable
    finally:
        server.close()


async def test_chunks_written_together_and_the_end_arrive_as_one_piece(tmp_path: Path) -> None:
    pieces, reusable = await answer(tmp_path, [CHUNKED_HEAD + b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"])
    assert pieces == [(b"onetwo", False)]
    assert reusable


async def test_chunks_written_apart_arrive_apart(tmp_path: Path) -> None:
    pieces, _ = await answer(tmp_path, [CHUNKED_HEAD + b"5\r\nfirs", b"t\r\n", b"6;ext=1\r\nsecond\r\n", b"0\r\n\r\n"])
    assert b"".join(p for p, _ in pieces) == b"firstsecond"
    assert [more for _, more in pieces] == [True] * (len(pieces) - 1) + [False]
    assert (b"second", True) in pieces  # not held back until the end came


async def test_a_chunk_larger_than_what_has_arrived_goes_on_in_parts(tmp_path: Path) -> None:
    big = 200_000  # several reads' worth: it is passed on as it comes, not held until complete
    pieces, reusable = await answer(tmp_path, [CHUNKED_HEAD + b"%x\r\n" % big + b"a" * 1000, b"a" * (big - 1000)
                                               + b"\r\n0\r\n\r\n"])
    assert b"".join(p for p, _ in pieces) == b"a" * big
    assert pieces[0] == (b"a" * 1000, True)
    assert pieces[-1][1] is False
    assert reusable


async def test_trailers_after_the_last_chunk_are_read_past(tmp_path: Path) -> None:
    pieces, reusable = await answer(tmp_path, [CHUNKED_HEAD + b"2\r\nhi\r\n0\r\nx-trailer: 1\r\n", b"\r\n"])
    assert b"".join(p for p, _ in pieces) == b"hi"
    assert pieces[-1][1] is False
    assert reusable


async def test_bytes_past_the_answer_spend_the_connection(tmp_path: Path) -> None:
    pieces, reusable = await answer(tmp_path, [CHUNKED_HEAD + b"2\r\nhi\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"])
    assert pieces == [(b"hi", False)]
    assert not reusable


@pytest.mark.parametrize("body", [b"zz\r\n", b"1" * 2000, b"2\r\nhello\r\n"])
async def test_a_malformed_chunk_is_an_upstream_error(tmp_path: Path, body: bytes) -> None:
    with pytest.raises(UpstreamError, match="malformed chunk"):
        await answer(tmp_path, [CHUNKED_HEAD + body])


async def test_an_answer_cut_short_is_an_upstream_error(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(CHUNKED_HEAD + b"5\r\nhal")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path)
    try:
        response = await AgentUpstream(path).request("GET", "/", [], b"", 0)
        with pytest.raises(UpstreamError, match="mid-body"):
            async for _ in response.pieces():
                pass
        response.close()
    finally:
        server.close()


async def test_a_sized_body_ends_with_its_last_piece(tmp_path: Path) -> None:
    pieces, reusable = await answer(tmp_path, [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello", b"world"])
    assert b"".join(p for p, _ in pieces) == b"helloworld"
    assert pieces[-1] == (b"world", False)
    assert reusable


async def test_a_bodiless_answer_is_one_empty_last_piece(tmp_path: Path) -> None:
    pieces, reusable = await answer(tmp_path, [b"HTTP/1.1 204 No Content\r\n\r\n"])
    assert pieces == [(b"", False)]
    assert reusable
