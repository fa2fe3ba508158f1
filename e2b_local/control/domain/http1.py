"""The parts of HTTP/1.1 the relay reads: request heads, answer heads and how a body is delimited."""

from __future__ import annotations

from dataclasses import dataclass

# Answer headers that are each hop's own business (the framing ones go on as they are, with the body).
RESPONSE_DROPPED = frozenset({b"connection", b"keep-alive", b"te", b"upgrade", b"proxy-connection", b"trailer"})
# The headers a request's framing and routing are read from.
FRAMING_AND_ROUTING = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade",
                                 b"expect"})
WHITESPACE = (b" ", b"\t")


class MalformedAnswer(Exception):
    """An answer head that is not HTTP/1.x."""


@dataclass
class Request:
    """One request head, parsed."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    host: bytes
    length: int
    chunked: bool
    upgrade: bytes | None
    expects_continue: bool
    keep_alive: bool

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _split_headers(lines: list[bytes]) -> list[tuple[bytes, bytes]] | None:
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        # No name, whitespace around it (a folded line starts with some): not a head to pass on.
        if not colon or not name or name[:1] in WHITESPACE or name[-1:] in WHITESPACE:
            return None
        headers.append((name.lower(), value.strip(b" \t")))
    return headers


def parse_request(raw: bytes) -> Request | None:
    """The request in `raw` (a head ending in an empty line), or None when it is not one to relay."""
    first = raw.find(b"\r\n")
    parts = raw[:first].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].startswith(b"/"):
        return None
    headers = _split_headers(raw[first + 2:-4].split(b"\r\n"))
    if headers is None:
        return None
    host: bytes | None = None
    length: bytes | None = None
    coding: bytes | None = None
    connection = upgrade = b""
    expects_continue = False
    for name, value in headers:
        if name not in FRAMING_AND_ROUTING:
            continue
        if name == b"host":
            if host is not None:
                return None
            host = value
        elif name == b"content-length":
            # One length, or a body framed two ways: how requests are smuggled past a proxy.
            if length is not None and length != value:
                return None
            length = value
        elif name == b"transfer-encoding":
            if coding is not None or value.lower() != b"chunked":
                return None
            coding = value
        elif name == b"connection":
            connection += b"," + value.lower()
        elif name == b"upgrade":
            upgrade = value
        elif name == b"expect":
            expects_continue = value.lower() == b"100-continue"
    if host is None or (coding is not None and length is not None) or (length is not None and not length.isdigit()):
        return None
    tokens = {token.strip() for token in connection.split(b",")} if connection else set()
    websocket = b"upgrade" in tokens and upgrade.lower() == b"websocket"
    keep_alive = b"close" not in tokens and (parts[2] == b"HTTP/1.1" or b"keep-alive" in tokens)
    return Request(parts[0], parts[1], parts[2], headers, host, int(length) if length else 0, coding is not None,
                   upgrade if websocket else None, expects_continue, keep_alive)


@dataclass
class Framing:
    """How an answer's body is delimited, and whether either connection stays open after it."""

    no_body: bool
    chunked: bool
    length: int | None
    until_close: bool
    upstream_keeps: bool
    keep_alive: bool


def framing_of(request: Request, raw: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> Framing:
    """How the answer `raw` (parsed into `status` and `headers`) to `request` is delimited."""
    coding = b""
    length_value: bytes | None = None
    connection = b""
    for name, value in headers:
        if name == b"content-length":
            length_value = value
        elif name == b"transfer-encoding":
            coding = value.lower()
        elif name == b"connection":
            connection = value.lower()
    chunked = coding.endswith(b"chunked")
    no_body = request.method == b"HEAD" or status in (204, 304)
    length = int(length_value) if length_value is not None and not coding and not no_body else None
    until_close = not no_body and not chunked and length is None
    upstream_keeps = raw.startswith(b"HTTP/1.1") and not until_close and b"close" not in connection
    return Framing(no_body, chunked, length, until_close, upstream_keeps, request.keep_alive and not until_close)


def parse_response(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The status and headers of an answer head; MalformedAnswer when it is not HTTP/1.x."""
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise MalformedAnswer(f"malformed answer from the service: {lines[0][:80]!r}")
    headers = _split_headers(lines[1:])
    if headers is None:
        raise MalformedAnswer("malformed headers from the service")
    return int(parts[1]), headers


def response_head(raw: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    """The answer's head as the client gets it: HTTP/1.1, without the other hop's own headers."""
    if keep_alive and raw.startswith(b"HTTP/1.1 ") and not any(name in RESPONSE_DROPPED for name, _ in headers):
        return raw  # nothing to change: passed on as it came
    status_line = raw[:raw.index(b"\r\n")]
    out = [b"HTTP/1.1", status_line[status_line.index(b" "):], b"\r\n"]
    for name, value in headers:
        if name not in RESPONSE_DROPPED:
            out += [name, b": ", value, b"\r\n"]
    if not keep_alive:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


