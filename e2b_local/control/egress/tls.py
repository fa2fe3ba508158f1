"""TLS for the egress proxy: the server name a connection asks for, the authority sandboxes trust, and
TLS over a connection whose first bytes have already been read.

The proxy terminates a sandbox's TLS only for hosts with header transforms. It reads the ClientHello
first (the server name, SNI, decides), so the TLS that follows has to start from bytes already taken
off the connection: `TlsStream` runs the server side of it over memory buffers.

The egress authority lives in the data directory (`egress-ca/`, its key 0600) and is created on first
start. Every sandbox's trust store holds its certificate (never its key); it signs a short-lived
certificate for each name the proxy terminates, made when first needed and kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import ssl
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from e2b_local.control import certificates

AUTHORITY_NAME = "e2b-local egress authority"
AUTHORITY_DAYS = 3650
# Certificates for the names the proxy terminates: issued again when less than a day remains.
LEAF_DAYS = 7
LEAF_RENEW = datetime.timedelta(days=1)
# Names whose contexts are kept (the least recently used goes first).
CACHE_SIZE = 1024
# h11 speaks HTTP/1.1 only: that is all either side is offered.
ALPN = ["http/1.1"]
CHUNK = 64 * 1024
# A ClientHello is one handshake message; no client sends one this large (the record limit is 16 KiB).
MAX_HELLO = 64 * 1024
HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 1
SERVER_NAME_EXTENSION = 0
HOST_NAME = 0


class NotClientHello(ValueError):
    """The bytes cannot begin a TLS ClientHello: the connection is some other protocol."""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise NotClientHello("a ClientHello field runs past its end")
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, size: int) -> _Cursor:
        return _Cursor(self.take(self.number(size)))

    def done(self) -> bool:
        return self.at >= len(self.data)


def _server_name(body: bytes) -> str | None:
    hello = _Cursor(body)
    hello.take(2 + 32)  # legacy version, random
    for size in (1, 2, 1):  # session id, cipher suites, compression methods
        hello.vector(size)
    if hello.done():
        return None
    extensions = hello.vector(2)
    while not extensions.done():
        kind, content = extensions.number(2), extensions.vector(2)
        if kind != SERVER_NAME_EXTENSION:
            continue
        names = content.vector(2)
        while not names.done():
            name_type, value = names.number(1), names.vector(2)
            if name_type == HOST_NAME:
                try:
                    return value.data.decode("ascii").lower().rstrip(".") or None
                except UnicodeDecodeError:
                    raise NotClientHello("a server name that is not ASCII") from None
        return None
    return None


def client_hello_name(data: bytes) -> tuple[bool, str | None]:
    """Whether `data` holds a whole ClientHello and, if it does, the host name it asks for (None: none sent).

    Raises `NotClientHello` when `data` cannot be the start of one.
    """
    message = bytearray()
    offset = 0
    while True:
        if len(data) < offset + 5:
            return False, None
        if data[offset] != HANDSHAKE_RECORD or data[offset + 1] != 3:
            raise NotClientHello("not a TLS handshake record")
        length = int.from_bytes(data[offset + 3:offset + 5], "big")
        if not 0 < length <= 2**14 + 2048:
            raise NotClientHello("a TLS record of an impossible length")
        if len(data) < offset + 5 + length:
            return False, None
        message += data[offset + 5:offset + 5 + length]
        offset += 5 + length
        if len(message) >= 4:
            if message[0] != CLIENT_HELLO:
                raise NotClientHello("the first handshake message is not a ClientHello")
            end = 4 + int.from_bytes(message[1:4], "big")
            if end > MAX_HELLO:
                raise NotClientHello("a ClientHello too large")
            if len(message) >= end:
                return True, _server_name(bytes(message[4:end]))


async def read_client_hello(reader: asyncio.StreamReader, received: bytearray) -> str | None:
    """Read a whole ClientHello into `received`; the host name it asks for.

    Raises `NotClientHello` for another protocol, or an end of the connection before the hello.
    """
    while True:
        complete, name = client_hello_name(bytes(received))
        if complete:
            return name
        data = await reader.read(CHUNK)
        if not data:
            raise NotClientHello("the connection ended before its ClientHello")
        received += data


def upstream_context() -> ssl.SSLContext:
    """How the proxy verifies a real destination: Python's defaults (the host's trust store, SSL_CERT_FILE)."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(ALPN)
    return context


class EgressAuthority:
    """The server's egress authority, and a server context for each name the proxy terminates."""

    def __init__(self, directory: Path) -> None:
        # Readable by others, as domain mode's `tls/`: the certificate is public, the key file 0600.
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.directory = directory
        self.cert, self._key = certificates.authority(directory / "ca.pem", directory / "ca-key.pem",
                                                      AUTHORITY_NAME, AUTHORITY_DAYS)
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        self._contexts: OrderedDict[str, tuple[ssl.SSLContext, datetime.datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def context_for(self, name: str) -> ssl.SSLContext:
        """A server context presenting a certificate for `name` (a DNS name or an IP address). Blocking."""
        with self._lock:
            found = self._contexts.get(name)
            if found is not None and found[1] - certificates.now() > LEAF_RENEW:
                self._contexts.move_to_end(name)
                return found[0]
        cert, key = certificates.server_certificate(self.cert, self._key, [name], LEAF_DAYS)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(ALPN)
        # The ssl module loads a chain from a file only: a private one (0600), gone once loaded.
        fd, path = tempfile.mkstemp(dir=self.directory, prefix=".leaf-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(certificates.key_pem(key) + cert.public_bytes(serialization.Encoding.PEM)
                        + self.pem.encode())
            context.load_cert_chain(path)
        finally:
            os.unlink(path)
        with self._lock:
            self._contexts[name] = (context, cert.not_valid_after_utc)
            self._contexts.move_to_end(name)
            while len(self._contexts) > CACHE_SIZE:
                self._contexts.popitem(last=False)
        return context


class TlsStream:
    """The server side of TLS on a connection of which `received` was already read: a reader and a writer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext,
                 received: bytes) -> None:
        self._reader, self._writer = reader, writer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._incoming.write(received)
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    def _send_pending(self) -> None:
        if pending := self._outgoing.read():
            self._writer.write(pending)

    async def _receive(self) -> None:
        """Send what TLS has to say, then wait for the peer's next bytes."""
        self._send_pending()
        await self._writer.drain()
        data = await self._reader.read(CHUNK)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def handshake(self) -> None:
        """Complete the handshake (raises ssl.SSLError when the peer does not)."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._receive()
        await self.drain()

    async def read(self, count: int) -> bytes:
        """Up to `count` bytes of plaintext; b"" at the end of the connection."""
        while True:
            try:
                data = self._tls.read(count)
            except ssl.SSLWantReadError:
                await self._receive()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            self._send_pending()
            return data

    def write(self, data: bytes) -> None:
        if data:
            self._tls.write(data)
            self._send_pending()

    async def drain(self) -> None:
        self._send_pending()
        await self._writer.drain()

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Say close_notify to the peer (the caller closes the connection)."""
        with contextlib.suppress(ssl.SSLError):  # it waits for the peer's close_notify, which may never come
            self._tls.unwrap()
        self._send_pending()
