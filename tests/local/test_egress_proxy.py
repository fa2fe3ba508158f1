"""Secrets, header transforms and the SOCKS5 egress proxy through the real SDK.

The target is a test host in a network namespace of its own (local/egress_servers.py): an HTTP
server on port 80 that records the headers it receives in a file the sandbox cannot see, and a
SOCKS5 server on port 1080 that records each destination it is asked for.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox, Secret

from local.nethost import namespaced_host

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
        # The host's loopback through slirp's gateway address, on the steered port and the server's own.
        assert fetch(sandbox, "http://10.0.2.2/") is None
        assert fetch(sandbox, f"http://10.0.2.2:{api_port}/health") is None
