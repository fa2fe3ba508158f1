"""Domain mode's pure parts: the certificate authority, host names, and signed-link lookup."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from urllib.parse import urlencode

from cryptography import x509

from e2b_local.control.auth import sign
from e2b_local.control.domain import ca
from e2b_local.control.domain.hosts import SandboxHost, parse
from e2b_local.control.domain.signed import signed_by
from e2b_local.control.registry import SandboxRecord


def test_the_authority_and_server_certificate(tmp_path: Path) -> None:
    files = ca.ensure(tmp_path / "tls", "e2b.localhost")
    assert files.ca_key.stat().st_mode & 0o777 == 0o600
    assert files.server_key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificates(files.server_cert.read_bytes())[0]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"e2b.localhost", "api.e2b.localhost", "*.e2b.localhost"}
    # A client trusting only the authority accepts the server's chain for a sandbox host.
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.server_cert, files.server_key)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(incoming, outgoing, server_hostname="49983-abc.e2b.localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(outgoing.read())
        incoming.write(s_out.read())
    assert c.version() is not None and c.getpeercert()["subjectAltName"]
    # The bundle holds the system's roots and ours; a second start keeps the same authority.
    assert files.ca_cert.read_bytes().strip() in files.bundle.read_bytes()
    authority = files.ca_cert.read_bytes()
    again = ca.ensure(tmp_path / "tls", "other.test")
    assert again.ca_cert.read_bytes() == authority
    renamed = x509.load_pem_x509_certificates(again.server_cert.read_bytes())[0]
    assert "*.other.test" in renamed.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_host_names() -> None:
    domain = "e2b.localhost"
    assert parse(b"8000-abc123.e2b.localhost:49443", domain) == SandboxHost("abc123", 8000)
    assert parse(b"49983-ABC.E2B.localhost", domain) == SandboxHost("abc", 49983)
    for other in (b"api.e2b.localhost:49443", b"127.0.0.1:49980", b"8000-abc.other.test", b"[::1]:49443",
                  b"70000-abc.e2b.localhost", b"x-abc.e2b.localhost", b"8000-a.b.e2b.localhost", b""):
        assert parse(other, domain) is None


def test_a_signed_link_names_the_sandbox_whose_token_signed_it() -> None:
    records = [SandboxRecord(sandbox_id=f"s{i}", template_id="base", key=f"k{i}", access_token=f"token{i}",
                             started_at=0.0, end_at=0.0) for i in range(3)]
    query = urlencode({"path": "/a", "signature": sign("/a", "read", "", "token1", None)}).encode()
    assert signed_by(records, "GET", query) == "s1"
    assert signed_by(records, "POST", query) is None  # a read link is no write link
    expiring = urlencode({"path": "/a", "username": "user", "signature": sign("/a", "write", "user", "token2", 5),
                          "signature_expiration": 5})
    assert signed_by(records, "POST", expiring.encode()) == "s2"
    assert signed_by(records, "GET", b"path=/a&signature=v1_nope") is None


def test_relay_takes_plain_requests_and_refuses_ambiguous_framing() -> None:
    from e2b_local.control.domain.http1 import parse_request

    request = parse_request(b"POST /a?b=1 HTTP/1.1\r\nHost: 8080-x.e2b.localhost\r\nContent-Length: 5\r\n"
                            b"X-API-Key: k\r\nExpect: 100-continue\r\n\r\n")
    assert request is not None
    assert (request.method, request.target, request.host, request.length) == (b"POST", b"/a?b=1",
                                                                             b"8080-x.e2b.localhost", 5)
    assert request.expects_continue and request.keep_alive and not request.chunked and request.upgrade is None
    upgrade = parse_request(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
                            b"Upgrade: websocket\r\n\r\n")
    assert upgrade is not None and upgrade.upgrade == b"websocket"
    old = parse_request(b"GET / HTTP/1.0\r\nHost: h\r\n\r\n")
    assert old is not None and not old.keep_alive
    chunked = parse_request(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert chunked is not None and chunked.chunked
    # What a relay must not guess at: the ASGI server answers these (or the relay refuses them).
    for head in (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                 b"GET / HTTP/1.1\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
                 b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
                 b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"):
        assert parse_request(head) is None, head
