"""A streaming `multipart/form-data` reader for `/files` uploads.

Starlette's form parser is not used because it strips directories from a part's `filename`, which
envd takes as the destination path, and python-multipart is not in the sandbox's root filesystem.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from collections.abc import AsyncIterator

MAX_PART_HEADERS = 64 * 1024
_PARAM_NAME = re.compile(r"\s*([^=;\s]+)\s*=\s*")


class MultipartError(ValueError):
    """The multipart body is malformed or truncated."""


class MultipartReader:
    """A streaming `multipart/form-data` reader: `next_part()` gives headers, `part_chunks()` the body."""

    def __init__(self, chunks: AsyncIterator[bytes], boundary: bytes) -> None:
        self._chunks = chunks
        # With a CRLF in front, the first delimiter looks like every later one.
        self._buffer = bytearray(b"\r\n")
        self._delimiter = b"\r\n--" + boundary
        self._eof = False
        self._started = False
        self._in_part = False
        self._done = False

    async def _fill(self) -> None:
        if self._eof:
            raise MultipartError("the multipart body ended early")
        try:
            self._buffer += await anext(self._chunks)
        except StopAsyncIteration:
            self._eof = True
            raise MultipartError("the multipart body ended early") from None

    async def next_part(self) -> dict[str, str] | None:
        """Headers (lower-cased names) of the next part, or None after the last one."""
        while self._in_part:
            await self.read()
        if self._done:
            return None
        if not self._started:
            self._started = True
            while (index := self._buffer.find(self._delimiter)) < 0:
                del self._buffer[:max(0, len(self._buffer) - len(self._delimiter))]  # preamble
                await self._fill()
            del self._buffer[:index + len(self._delimiter)]
        while len(self._buffer) < 2:
            await self._fill()
        if self._buffer.startswith(b"--"):
            self._done = True
            return None
        while (end := self._buffer.find(b"\r\n")) < 0:
            await self._fill()
        del self._buffer[:end + 2]  # transport padding after the delimiter
        while not self._buffer.startswith(b"\r\n") and (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_PART_HEADERS:
                raise MultipartError("part headers are too large")
            await self._fill()
        if self._buffer.startswith(b"\r\n"):
            raw, skip = b"", 2
        else:
            raw, skip = bytes(self._buffer[:end]), end + 4
        del self._buffer[:skip]
        self._in_part = True
        return _parse_headers(raw)

    async def read(self) -> bytes:
        """The next piece of the current part's body; b"" at its end."""
        while self._in_part:
            index = self._buffer.find(self._delimiter)
            if index >= 0:
                data = bytes(self._buffer[:index])
                del self._buffer[:index + len(self._delimiter)]
                self._in_part = False
                return data
            # Keep a tail that could be the start of a delimiter split across chunks.
            safe = len(self._buffer) - len(self._delimiter) + 1
            if safe > 0:
                data = bytes(self._buffer[:safe])
                del self._buffer[:safe]
                return data
            await self._fill()
        return b""

    async def part_chunks(self) -> AsyncIterator[bytes]:
        """The current part's body as it arrives."""
        while self._in_part:
            data = await self.read()
            if data:
                yield data


def _parse_headers(raw: bytes) -> dict[str, str]:
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    headers: dict[str, str] = {}
    for line in text.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def disposition_params(value: str) -> dict[str, str]:
    """Parameters of a Content-Disposition value, with quoted strings unescaped and no path stripping."""
    params: dict[str, str] = {}
    rest = value.partition(";")[2]
    pos = 0
    while pos < len(rest):
        match = _PARAM_NAME.match(rest, pos)
        if match is None:
            semicolon = rest.find(";", pos)
            pos = len(rest) if semicolon < 0 else semicolon + 1
            continue
        key, pos = match.group(1).lower(), match.end()
        if rest.startswith('"', pos):
            chars = []
            pos += 1
            while pos < len(rest) and rest[pos] != '"':
                if rest[pos] == "\\" and pos + 1 < len(rest):
                    pos += 1
                chars.append(rest[pos])
                pos += 1
            params[key] = "".join(chars)
            pos += 1
        else:
            end = rest.find(";", pos)
            end = len(rest) if end < 0 else end
            params[key] = rest[pos:end].strip()
            pos = end
        semicolon = rest.find(";", pos)
        pos = len(rest) if semicolon < 0 else semicolon + 1
    # RFC 5987 form, `filename*=UTF-8''%2Fhome%2F...`, wins over the plain one.
    if "filename*" in params:
        charset, _, encoded = params["filename*"].partition("'")
        encoded = encoded.partition("'")[2]
        with contextlib.suppress(LookupError, UnicodeDecodeError):
            params["filename"] = urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
    return params
