"""The egress proxy's TLS parts: reading the server name of a ClientHello, the egress authority's
certificates, and the sandbox side's trust store."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest

from e2b_local.agent import trust
from e2b_local.control.egress.proxy import Route, tls_headers
from e2b_local.control.egress.tls import EgressAuthority, NotClientHello, client_hello_name


def client_hello(server_hostname: str) -> bytes:
    """The first flight of a real TLS client (Python's) asking for `server_hostname`."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> ssl.SSLObject:
    """Run a handshake between the two contexts in memory; the client's side, once done."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    return c


def test_the_server_name_of_a_client_hello() -> None:
    hello = client_hello("API.Example.com")
    assert client_hello_name(hello) == (True, "api.example.com")
    # Every shorter prefix asks for more; what follows the hello does not matter.
    assert all(client_hello_name(hello[:n]) == (False, None) for n in range(len(hello)))
    assert client_hello_name(hello + b"\x17\x03\x03") == (True, "api.example.com")
    # Clients send no name for an address.
    assert client_hello_name(client_hello("10.1.2.3")) == (True, None)


def test_a_client_hello_split_over_two_records() -> None:
    hello = client_hello("split.example")
    body = hello[5:]
    half = len(body) // 2
    records = b"".join(hello[:3] + len(part).to_bytes(2, "big") + part for part in (body[:half], body[half:]))
    assert client_hello_name(records[:-1]) == (False, None)
    assert client_hello_name(records) == (True, "split.example")


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"SSH-2.0-OpenSSH_9.2\r\n",
                                  b"\x16\x03\x01\x00\x00", b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"])
def test_other_protocols_are_not_a_client_hello(data: bytes) -> None:
    with pytest.raises(NotClientHello):
        client_hello_name(data)


def test_a_truncated_client_hello_is_refused() -> None:
    hello = bytearray(client_hello("cut.example"))
    # A record that claims a shorter handshake than its fields need.
    hello[5 + 1:5 + 4] = (40).to_bytes(3, "big")
    with pytest.raises(NotClientHello):
        client_hello_name(bytes(hello))


def test_the_egress_authority_signs_what_its_trusting_clients_accept(tmp_path: Path) -> None:
    authority = EgressAuthority(tmp_path / "egress-ca")
    key = tmp_path / "egress-ca" / "ca-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" not in authority.pem and "BEGIN CERTIFICATE" in authority.pem
    trusting = ssl.create_default_context(cadata=authority.pem)
    for name in ("api.example.com", "10.1.2.3"):
        done = handshake(authority.context_for(name), trusting, name)
        assert done.version() is not None and done.selected_alpn_protocol() is None
    # A client that does not trust the authority refuses it; a name the certificate is not for fails.
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(authority.context_for("api.example.com"), ssl.create_default_context(), "api.example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(authority.context_for("api.example.com"), trusting, "other.example.com")
    # Cached per name, and no key is left behind; the same authority after a restart.
    assert authority.context_for("api.example.com") is authority.context_for("api.example.com")
    assert sorted(p.name for p in (tmp_path / "egress-ca").iterdir()) == ["ca-key.pem", "ca.pem"]
    assert EgressAuthority(tmp_path / "egress-ca").pem == authority.pem


def test_only_http_1_1_is_offered(tmp_path: Path) -> None:
    authority = EgressAuthority(tmp_path / "egress-ca")
    client = ssl.create_default_context(cadata=authority.pem)
    client.set_alpn_protocols(["h2", "http/1.1"])
    assert handshake(authority.context_for("a.example"), client, "a.example").selected_alpn_protocol() == "http/1.1"


def test_which_tls_connections_get_headers() -> None:
    route = Route(owner=1, rules={"api.example.com": {"a": "1"}, "10.0.0.0/8": {"b": "2"}, "empty.example": {}})
    assert tls_headers(route, "api.example.com", "192.0.2.1") == {"a": "1"}
    assert tls_headers(route, None, "10.1.2.3") == {"b": "2"}
    assert tls_headers(route, "api.example.com", "10.1.2.3") == {"a": "1", "b": "2"}
    assert tls_headers(route, "other.example.com", "192.0.2.1") == {}
    assert tls_headers(route, "empty.example", "192.0.2.1") == {}


def test_the_sandbox_trust_store(tmp_path: Path) -> None:
    authority = EgressAuthority(tmp_path / "egress-ca")
    root = tmp_path / "root"
    bundle = root / trust.BUNDLES[0]
    bundle.parent.mkdir(parents=True)
    bundle.write_text("-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----")
    env = trust.install(authority.pem, str(root))
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
                   "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
                   "NODE_EXTRA_CA_CERTS": "/usr/local/share/ca-certificates/e2b-local-egress.crt"}
    assert trust.install(authority.pem, str(root)) == env
    text = bundle.read_text()
    assert text.startswith("-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n")
    assert text.count(authority.pem.strip()) == 1
    assert (root / trust.LOCAL_CERTIFICATE).read_text().strip() == authority.pem.strip()


def test_a_sandbox_without_a_bundle_gets_one(tmp_path: Path) -> None:
    authority = EgressAuthority(tmp_path / "egress-ca")
    root = tmp_path / "root"
    root.mkdir()
    env = trust.install(authority.pem, str(root))
    assert (root / trust.BUNDLES[0]).read_text().strip() == authority.pem.strip()
    assert env["SSL_CERT_FILE"] == "/" + trust.BUNDLES[0]
