"""Secrets, header transforms over HTTP and HTTPS, and the SOCKS5 egress proxy through the real SDK.

The target is a test host in a network namespace of its own (local/egress_servers.py): an HTTP
server on port 80 that records the headers it receives in a file the sandbox cannot see, and a
SOCKS5 server on port 1080 that records each destination it is asked for. For HTTPS, a second test
host adds an HTTPS server on port 443 with a certificate from a test authority, which the e2b-local
server under test trusts (SSL_CERT_FILE: the system's roots and that authority) and sandboxes do not.
"""

from __future__ import annotations

import base64
import json
import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox, Secret

from e2b_local.control.domain.ca import system_roots
from local.egress_servers import write_authority
from local.nethost import namespaced_host
from tests.conftest import LocalServer, start_server, stop_server

SERVERS = str(Path(__file__).with_name("egress_servers.py"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The test host's address and the directory its servers log to."""
    logs = tmp_path_factory.mktemp("egress-logs")
    with namespaced_host(80, [SERVERS, "{address}", "{port}", "1080", str(logs)]) as target:
        yield target.split(":")[0], logs


SEARCH = """
import base64, os, sys
value = base64.b64decode(sys.argv[1])
me = str(os.getpid())
paths = [f"/proc/{p}/{f}" for p in os.listdir("/proc") if p.isdigit() and p != me for f in ("environ", "cmdline")]
for top in ("/etc", "/home", "/tmp", "/root", "/run", "/.e2b", "/var"):
    for root, _, files in os.walk(top):
        paths += [p for p in (os.path.join(root, f) for f in files) if os.path.isfile(p) and not os.path.islink(p)]
for path in paths:
    try:
        with open(path, "rb") as f:
            if value in f.read(1 << 22):
                print(path)
    except OSError:
        pass
"""


def fetch(sandbox: Sandbox, url: str) -> str | None:
    """The body an HTTP GET from inside the sandbox gets, or None when it fails."""
    try:
        return sandbox.commands.run(f"curl -sS -m 10 {url}", timeout=30).stdout
    except CommandExitException:
        return None


def requests_seen(logs: Path) -> list[dict[str, str]]:
    path = logs / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def secret(e2b_server) -> Iterator[tuple[str, str]]:
    name, value = "tok-" + secrets.token_hex(4), "v4lue-" + secrets.token_hex(12)
    Secret.create(name, value, metadata={"purpose": "test"})
    try:
        yield name, value
    finally:
        Secret.destroy(name)


def test_secrets_are_listed_without_their_values(secret: tuple[str, str]) -> None:
    name, value = secret
    info = Secret.get_info(name)
    assert info.name == name and info.version == 1 and info.metadata == {"purpose": "test"}
    listed = []
    paginator = Secret.list(limit=100)
    while paginator.has_next:
        listed += paginator.next_items()
    assert name in [s.name for s in listed]
    assert value not in repr(listed) + repr(info)
    assert Secret.update(name, value + "-2").version == 2
    assert Secret.exists(info.secret_id)
    assert not Secret.destroy("no-such-secret-" + secrets.token_hex(4))


def test_a_header_transform_sends_the_secret_that_the_sandbox_never_sees(
        secret: tuple[str, str], site: tuple[str, Path]) -> None:
    name, value = secret
    address, logs = site
    rules = {address: [{"transform": {"headers": {"Authorization": f"Bearer {Secret.fill(name)}"}}}]}
    with Sandbox.create(network={"rules": rules}) as sandbox:
        assert fetch(sandbox, f"http://{address}/with-secret") == "ok"
        seen = [r for r in requests_seen(logs) if r.get("authorization")]
        assert seen[-1]["authorization"] == f"Bearer {value}"
        # The request as the sandbox sent it, and everything the sandbox can read: no value.
        sent = sandbox.commands.run(f"curl -sS -v -m 10 http://{address}/again 2>&1", timeout=30).stdout
        assert "Bearer" not in sent and value not in sent
        # Searched for by a program that holds the value only in memory (decoded from base64).
        sandbox.files.write("/tmp/search.py", SEARCH)
        encoded = base64.b64encode(value.encode()).decode()
        found = sandbox.commands.run(f"python3 /tmp/search.py {encoded}", user="root", timeout=120).stdout
        assert found.strip() == "", found


def test_a_rule_for_a_domain_is_not_applied_to_another_address(
        secret: tuple[str, str], site: tuple[str, Path]) -> None:
    name, value = secret
    address, logs = site
    rules = {"localhost": [{"transform": {"headers": {"X-Leak": Secret.fill(name)}}}]}
    with Sandbox.create(network={"rules": rules}) as sandbox:
        # Naming the rule's host in a request to an address that is not the host's gets nothing.
        assert fetch(sandbox, f"-H 'Host: localhost' http://{address}/spoofed") == "ok"
    assert not any(value in json.dumps(r) for r in requests_seen(logs))


def test_the_socks_proxy_sees_the_sandbox_connections(e2b_server, site: tuple[str, Path]) -> None:
    address, logs = site
    with Sandbox.create(network={"egress_proxy": {"address": f"{address}:1080"}}) as sandbox:
        assert fetch(sandbox, f"http://{address}/through-socks") == "ok"
    assert f"{address}:80" in (logs / "socks.log").read_text().splitlines()


def test_without_a_reachable_socks_proxy_nothing_leaves(e2b_server, site: tuple[str, Path]) -> None:
    address, _ = site
    with Sandbox.create(network={"egress_proxy": {"address": f"{address}:1081"}}) as sandbox:
        assert fetch(sandbox, f"http://{address}/") is None
        assert fetch(sandbox, "https://pypi.org/simple/") is None


def test_a_socks_proxy_on_the_host_is_refused_like_any_host_address(e2b_server, site: tuple[str, Path]) -> None:
    # The server's own port as the "proxy": its hop is filtered as the sandbox's own connections are.
    address, _ = site
    port = e2b_server.url.rstrip("/").rsplit(":", 1)[1]
    for proxy in (f"127.0.0.1:{port}", f"{address.rsplit('.', 1)[0]}.1:{port}"):
        with Sandbox.create(network={"egress_proxy": {"address": proxy}}) as sandbox:
            assert fetch(sandbox, f"http://{address}/") is None


def test_steering_gives_no_way_to_the_host(e2b_server, secret: tuple[str, str], site: tuple[str, Path]) -> None:
    name, _ = secret
    api_port = e2b_server.url.rstrip("/").rsplit(":", 1)[1]
    address, _ = site
    host_side = address.rsplit(".", 1)[0] + ".1"
    rules = {host_side: [{"transform": {"headers": {"X-A": Secret.fill(name)}}}],
             address: [{"transform": {"headers": {"X-A": Secret.fill(name)}}}]}
    with Sandbox.create(network={"rules": rules}) as sandbox:
        assert fetch(sandbox, f"http://{address}/") == "ok"  # steered, and through
        # The host's address on the test host's link, on the steered port and another: refused as ever.
        assert fetch(sandbox, f"http://{host_side}/") is None
        assert fetch(sandbox, f"http://{host_side}:{api_port}/") is None
        assert fetch(sandbox, f"-k https://{host_side}/") is None
        # The host's loopback through slirp's gateway address, on the steered port and the server's own.
        assert fetch(sandbox, "http://10.0.2.2/") is None
        assert fetch(sandbox, f"http://10.0.2.2:{api_port}/health") is None
        assert fetch(sandbox, "-k https://10.0.2.2/") is None


# --- HTTPS -------------------------------------------------------------------------------------------

TEST_AUTHORITY = "e2b-local test upstream authority"
EGRESS_ISSUER = "issuer: O=e2b-local; CN=e2b-local egress authority"
URLLIB = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
NODE = ("fetch(process.argv[1]).then(r => r.text()).then(t => console.log(t))"
        ".catch(e => { console.error(String(e.cause || e)); process.exit(1); })")


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test host's authorities, and the bundle the server under test trusts: the system's roots and one of them."""
    directory = tmp_path_factory.mktemp("egress-tls")
    trusted = write_authority(directory, "trusted", TEST_AUTHORITY)
    write_authority(directory, "untrusted", "an authority nobody trusts")
    roots = system_roots()
    (directory / "bundle.pem").write_bytes((roots.read_bytes() if roots else b"") + trusted.read_bytes())
    return directory


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory, authorities: Path) -> Iterator[tuple[str, Path]]:
    """The HTTPS test host's address and the directory its servers log to."""
    logs = tmp_path_factory.mktemp("egress-tls-logs")
    with namespaced_host(80, [SERVERS, "{address}", "{port}", "1080", str(logs), str(authorities)]) as target:
        yield target.split(":")[0], logs


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, authorities: Path) -> Iterator[LocalServer]:
    """An e2b-local server whose egress proxy verifies destinations against the system's roots and the test's."""
    server = start_server(tmp_path_factory.mktemp("e2b-egress-tls-home"),
                          env={"SSL_CERT_FILE": str(authorities / "bundle.pem")})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def tls_secret(tls_server: LocalServer) -> Iterator[tuple[str, str]]:
    name, value = "tls-" + secrets.token_hex(4), "v4lue-" + secrets.token_hex(12)
    Secret.create(name, value, **tls_server.sdk)
    try:
        yield name, value
    finally:
        Secret.destroy(name, **tls_server.sdk)


def run(sandbox: Sandbox, command: str, user: str = "user") -> str | None:
    """The output of `command` in the sandbox (stdout and stderr), or None when it fails."""
    try:
        return sandbox.commands.run(command + " 2>&1", timeout=60, user=user).stdout.strip()
    except CommandExitException:
        return None


def name_the_test_host(sandbox: Sandbox, address: str) -> None:
    """The test host's names, as its certificate has them, for the sandbox's resolver."""
    sandbox.commands.run(f"echo '{address} egress.test plain.test untrusted.test' >> /etc/hosts", user="root")


def seen_at(logs: Path, path: str) -> list[dict[str, str]]:
    return [r for r in requests_seen(logs) if r.get(":path") == path]


def test_https_to_a_rule_host_carries_the_secret_that_the_sandbox_never_sees(
        tls_server: LocalServer, tls_secret: tuple[str, str], tls_site: tuple[str, Path]) -> None:
    name, value = tls_secret
    address, logs = tls_site
    rules = {"egress.test": [{"transform": {"headers": {"Authorization": f"Bearer {Secret.fill(name)}"}}}]}
    with Sandbox.create(network={"rules": rules}, **tls_server.sdk) as sandbox:
        name_the_test_host(sandbox, address)
        # No flag anywhere: curl, Python and Node trust the server's egress authority.
        assert run(sandbox, "curl -sS -m 10 https://egress.test/curl") == "ok"
        assert run(sandbox, f"python3 -c {shlex.quote(URLLIB)} https://egress.test/urllib") == "ok"
        assert run(sandbox, f"node -e {shlex.quote(NODE)} https://egress.test/node").endswith("ok")
        for path in ("/curl", "/urllib", "/node"):
            (request,) = seen_at(logs, path)
            assert request["authorization"] == f"Bearer {value}" and request[":sni"] == "egress.test"
        # What the sandbox is shown: a certificate of the egress authority, neither the header nor the value.
        shown = run(sandbox, "curl -sS -v -m 10 https://egress.test/shown")
        assert shown is not None and EGRESS_ISSUER in shown and shown.endswith("ok")
        assert "Bearer" not in shown and value not in shown
        # Searched for by a program that holds the value only in memory (decoded from base64).
        sandbox.files.write("/tmp/search.py", SEARCH)
        encoded = base64.b64encode(value.encode()).decode()
        found = sandbox.commands.run(f"python3 /tmp/search.py {encoded}", user="root", timeout=120).stdout
        assert found.strip() == "", found
        # The sandbox holds the authority's certificate, never its key.
        keys = run(sandbox, "grep -rl 'PRIVATE KEY' /etc/ssl /usr/local/share/ca-certificates || true", user="root")
        assert keys == ""
    assert (tls_server.home / "egress-ca" / "ca-key.pem").stat().st_mode & 0o777 == 0o600


def test_a_rule_for_an_address_applies_to_https_without_a_server_name(
        tls_server: LocalServer, tls_secret: tuple[str, str], tls_site: tuple[str, Path]) -> None:
    name, value = tls_secret
    address, logs = tls_site
    rules = {address: [{"transform": {"headers": {"X-Api-Key": Secret.fill(name)}}}]}
    with Sandbox.create(network={"rules": rules}, **tls_server.sdk) as sandbox:
        assert run(sandbox, f"curl -sS -m 10 https://{address}/by-address") == "ok"
    (request,) = seen_at(logs, "/by-address")
    assert request["x-api-key"] == value and request[":sni"] is None


def test_https_to_hosts_without_rules_is_not_intercepted(
        tls_server: LocalServer, tls_secret: tuple[str, str], tls_site: tuple[str, Path], authorities: Path) -> None:
    name, value = tls_secret
    address, logs = tls_site
    rules = {"egress.test": [{"transform": {"headers": {"Authorization": Secret.fill(name)}}}]}
    with Sandbox.create(network={"rules": rules}, **tls_server.sdk) as sandbox:
        name_the_test_host(sandbox, address)
        sandbox.files.write("/tmp/test-authority.pem", (authorities / "trusted.pem").read_text())
        # The test host's own certificate reaches the sandbox: another name, or its address with no name.
        for url in ("https://plain.test/plain", f"https://{address}/plain-address"):
            shown = run(sandbox, f"curl -sS -v -m 10 --cacert /tmp/test-authority.pem {url}")
            assert shown is not None and f"issuer: CN={TEST_AUTHORITY}" in shown and shown.endswith("ok"), shown
        # So a sandbox that does not trust the test authority refuses it.
        assert run(sandbox, "curl -sS -m 10 https://plain.test/refused") is None
        # And a host whose certificate nobody trusts is reachable as it is, when it has no rules.
        assert run(sandbox, "curl -sS -k -m 10 https://untrusted.test/as-it-is") == "ok"
    for path in ("/plain", "/plain-address", "/as-it-is"):
        (request,) = seen_at(logs, path)
        assert "authorization" not in request and value not in json.dumps(request)
    assert not seen_at(logs, "/refused")


def test_an_upstream_that_fails_verification_fails_the_request(
        tls_server: LocalServer, tls_secret: tuple[str, str], tls_site: tuple[str, Path]) -> None:
    name, value = tls_secret
    address, logs = tls_site
    rules = {"untrusted.test": [{"transform": {"headers": {"Authorization": Secret.fill(name)}}}]}
    with Sandbox.create(network={"rules": rules}, **tls_server.sdk) as sandbox:
        name_the_test_host(sandbox, address)
        # Never a downgrade: not even a client that accepts any certificate gets through.
        assert run(sandbox, "curl -sS -m 10 https://untrusted.test/verified") is None
        assert run(sandbox, "curl -sS -k -m 10 https://untrusted.test/unverified") is None
        assert run(sandbox, f"python3 -c {shlex.quote(URLLIB)} https://untrusted.test/urllib") is None
    assert not [r for r in requests_seen(logs) if r.get(":sni") == "untrusted.test" and r[":path"] != "/as-it-is"]
    assert not any(value in json.dumps(r) for r in requests_seen(logs))


def test_requests_and_httpx_trust_the_egress_authority_and_a_rebuilt_store_keeps_it(
        tls_server: LocalServer, tls_secret: tuple[str, str], tls_site: tuple[str, Path]) -> None:
    name, value = tls_secret
    address, logs = tls_site
    rules = {"egress.test": [{"transform": {"headers": {"Authorization": Secret.fill(name)}}}]}
    with Sandbox.create(network={"rules": rules}, **tls_server.sdk) as sandbox:
        name_the_test_host(sandbox, address)
        # They carry roots of their own (certifi) unless told otherwise, as the sandbox's environment does.
        sandbox.commands.run("python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -q requests httpx", timeout=300)
        for library in ("requests", "httpx"):
            code = f"import sys, {library}; print({library}.get(sys.argv[1]).text)"
            assert run(sandbox, f"/tmp/venv/bin/python -c {shlex.quote(code)} https://egress.test/{library}") == "ok"
        # The system store rebuilt from its sources still has the authority.
        assert run(sandbox, "update-ca-certificates --fresh", user="root") is not None
        assert run(sandbox, "curl -sS -m 10 https://egress.test/rebuilt") == "ok"
    for path in ("/requests", "/httpx", "/rebuilt"):
        (request,) = seen_at(logs, path)
        assert request["authorization"] == value


def test_https_transforms_through_a_socks_proxy(
        tls_server: LocalServer, tls_secret: tuple[str, str], tls_site: tuple[str, Path]) -> None:
    name, value = tls_secret
    address, logs = tls_site
    network = {"egress_proxy": {"address": f"{address}:1080"},
               "rules": {"egress.test": [{"transform": {"headers": {"Authorization": Secret.fill(name)}}}]}}
    with Sandbox.create(network=network, **tls_server.sdk) as sandbox:
        name_the_test_host(sandbox, address)
        assert run(sandbox, "curl -sS -m 10 https://egress.test/through-socks") == "ok"
    (request,) = seen_at(logs, "/through-socks")
    assert request["authorization"] == value and request[":sni"] == "egress.test"
    assert f"{address}:443" in (logs / "socks.log").read_text().splitlines()
