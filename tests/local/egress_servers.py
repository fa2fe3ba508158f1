"""Servers the egress tests run on a namespaced test host: an HTTP server that records each request's
headers in a file (never in its answer), and beside it a SOCKS5 server that records each CONNECT.

Run as `python egress_servers.py ADDRESS HTTP_PORT SOCKS_PORT LOG_DIRECTORY [CERTIFICATES]`. With a
CERTIFICATES directory, an HTTPS server on port 443 records the same way (with the server name the
client asked for). Its certificate, for its address and the names in NAMES, is issued at its start by
the authority in `trusted.pem` / `trusted-key.pem` there; a client that asks for `untrusted.test` gets
one from `untrusted.pem` / `untrusted-key.pem` instead.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HTTPS_PORT = 443
UNTRUSTED_NAME = "untrusted.test"
# Other names the test host's certificate covers (a sandbox maps them to its address in /etc/hosts).
NAMES = ("egress.test", "plain.test")


def _certificate(subject: str, issuer: x509.Name | None, issuer_key: ec.EllipticCurvePrivateKey | None,
                 names: list[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if names:
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def write_authority(directory: Path, stem: str, common_name: str) -> Path:
    """A self-signed test authority as `stem.pem` and `stem-key.pem` in `directory`; the certificate's path."""
    cert, key = _certificate(common_name, None, None, [])
    (directory / f"{stem}-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / f"{stem}.pem"


def _issued(directory: Path, stem: str, names: list[str]) -> ssl.SSLContext:
    """A server context with a certificate for `names` from the authority `stem` in `directory`."""
    authority = x509.load_pem_x509_certificate((directory / f"{stem}.pem").read_bytes())
    authority_key = serialization.load_pem_private_key((directory / f"{stem}-key.pem").read_bytes(), None)
    assert isinstance(authority_key, ec.EllipticCurvePrivateKey)
    cert, key = _certificate(names[0], authority.subject, authority_key, names)
    chain = directory / f".{stem}-server.pem"
    chain.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
                      + cert.public_bytes(serialization.Encoding.PEM))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return context


def http_server(address: str, port: int, log: Path, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            if tls is not None:
                self.request.do_handshake()
            super().setup()

        def do_GET(self) -> None:
            seen = {k.lower(): v for k, v in self.headers.items()}
            if tls is not None:
                seen.update({":scheme": "https", ":sni": getattr(self.request, "sni", None)})
            with log.open("a") as f:
                f.write(json.dumps({":path": self.path, **seen}) + "\n")
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    if tls is not None:
        # The handshake runs in each request's thread (setup), not in the accepting one.
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


def tls_context(certificates: Path, address: str) -> ssl.SSLContext:
    untrusted = _issued(certificates, "untrusted", [UNTRUSTED_NAME])
    context = _issued(certificates, "trusted", [address, *NAMES])

    def by_name(sock: ssl.SSLSocket | ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        sock.sni = name  # type: ignore[union-attr]
        if name == UNTRUSTED_NAME:
            sock.context = untrusted

    context.sni_callback = by_name
    return context


async def socks_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: Path) -> None:
    # RFC 1928, no authentication, CONNECT to an IPv4 address only: what the tests need.
    try:
        _, count = await reader.readexactly(2)
        await reader.readexactly(count)
        writer.write(b"\x05\x00")
        _, command, _, kind = await reader.readexactly(4)
        if command != 1 or kind != 1:
            return
        host = socket.inet_ntoa(await reader.readexactly(4))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        with log.open("a") as f:
            f.write(f"{host}:{port}\n")
        up_reader, up_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("0.0.0.0") + b"\x00\x00")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    address, http_port, socks_port, logs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    if len(sys.argv) > 5:
        # Listening before the HTTP server, which the test waits for.
        https = http_server(address, HTTPS_PORT, logs / "requests.jsonl", tls_context(Path(sys.argv[5]), address))
        Thread(target=https.serve_forever, daemon=True).start()
    server = http_server(address, http_port, logs / "requests.jsonl")
    Thread(target=server.serve_forever, daemon=True).start()
    socks = await asyncio.start_server(lambda r, w: socks_session(r, w, logs / "socks.log"), address, socks_port)
    await socks.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
