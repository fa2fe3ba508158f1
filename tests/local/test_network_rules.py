"""Outbound network rules (`network=`, `allow_internet_access`, `update_network`) through the real SDK.

Targets: a small HTTP server on a test host in a network namespace of its own (reached from the
sandbox through slirp4netns; the host's own addresses are always refused) and PyPI over HTTPS,
which sandboxes here can reach. curl's `--resolve` pins pypi.org to the address resolved on the
host, so that DNS rules do not blur what is tested.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from e2b import CommandExitException, Sandbox, SandboxException

from local.nethost import namespaced_host


@pytest.fixture(scope="module")
def local_site() -> Iterator[str]:
    """`address:port` of an HTTP server on a test host of this machine (never the host itself)."""
    with namespaced_host() as target:
        yield target


@pytest.fixture(scope="module")
def pypi() -> str:
    return socket.gethostbyname("pypi.org")


def reaches(sandbox: Sandbox, url: str, resolve: str | None = None) -> bool:
    """Whether an HTTP(S) request from inside the sandbox gets any answer."""
    pin = f"--resolve {resolve} " if resolve else ""
    try:
        sandbox.commands.run(f"curl -sS -m 10 -o /dev/null {pin}{url}", timeout=30)
    except CommandExitException:
        return False
    return True


def can_reach_pypi(sandbox: Sandbox, address: str) -> bool:
    return reaches(sandbox, "https://pypi.org/simple/", resolve=f"pypi.org:443:{address}")


def test_deny_all_with_an_allowed_hole(e2b_server, local_site: str, pypi: str) -> None:
    network = {"deny_out": ["0.0.0.0/0"], "allow_out": [local_site.split(":")[0]]}
    with Sandbox.create(network=network) as sandbox:
        assert reaches(sandbox, f"http://{local_site}/")
        assert not can_reach_pypi(sandbox, pypi)
        assert sandbox.get_info().network == {"allow_out": network["allow_out"], "deny_out": ["0.0.0.0/0"]}


def test_deny_one_address(e2b_server, local_site: str, pypi: str) -> None:
    with Sandbox.create(network={"deny_out": [f"{pypi}/32"]}) as sandbox:
        assert not can_reach_pypi(sandbox, pypi)
        assert reaches(sandbox, f"http://{local_site}/")


def test_update_network_replaces_the_rules(e2b_server, local_site: str, pypi: str) -> None:
    with Sandbox.create() as sandbox:
        assert can_reach_pypi(sandbox, pypi)
        sandbox.update_network({"deny_out": [pypi]})
        assert not can_reach_pypi(sandbox, pypi)
        assert reaches(sandbox, f"http://{local_site}/")
        sandbox.update_network({"allow_internet_access": False})
        assert not reaches(sandbox, f"http://{local_site}/")
        sandbox.update_network({})  # replace semantics: no rules at all
        assert can_reach_pypi(sandbox, pypi)


def test_no_internet_then_a_hole(e2b_server, local_site: str, pypi: str) -> None:
    with Sandbox.create(allow_internet_access=False) as sandbox:
        assert not reaches(sandbox, f"http://{local_site}/")
        assert sandbox.get_info().allow_internet_access is False
        sandbox.update_network({"allow_out": [local_site.split(":")[0]], "allow_internet_access": False})
        assert reaches(sandbox, f"http://{local_site}/")
        assert not can_reach_pypi(sandbox, pypi)


def test_domain_in_allow_out(e2b_server, local_site: str) -> None:
    with Sandbox.create(network={"deny_out": ["0.0.0.0/0"], "allow_out": ["pypi.org"]}) as sandbox:
        assert reaches(sandbox, "https://pypi.org/simple/")  # resolved by the sandbox's own DNS
        assert not reaches(sandbox, f"http://{local_site}/")


def test_root_in_the_sandbox_cannot_lift_the_rules(e2b_server, pypi: str) -> None:
    with Sandbox.create(network={"deny_out": [pypi]}) as sandbox:
        status = sandbox.commands.run("grep -E '^Cap(Eff|Bnd)' /proc/self/status", user="root").stdout
        for line in status.splitlines():
            assert not int(line.split()[1], 16) & (1 << 12), f"CAP_NET_ADMIN present: {line}"
        attempts = ("ip link set tap0 down", "ip route del default", "ip link add dummy0 type dummy",
                    "ip addr add 10.9.9.9/32 dev lo")
        for attempt in attempts:
            with pytest.raises(CommandExitException):
                sandbox.commands.run(attempt, user="root")
        assert not can_reach_pypi(sandbox, pypi)


def test_rules_survive_pause_and_reboot(e2b_server, local_site: str, pypi: str) -> None:
    with Sandbox.create(network={"deny_out": [pypi]}) as sandbox:
        sandbox.pause(mode="filesystem")
        resumed = Sandbox.connect(sandbox.sandbox_id)
        assert not can_reach_pypi(resumed, pypi)
        assert reaches(resumed, f"http://{local_site}/")


def test_unsupported_rules_are_refused(e2b_server) -> None:
    for network in ({"deny_out": ["example.com"]}, {"allow_out": ["*.example.com"], "deny_out": ["0.0.0.0/0"]},
                    {"egress_proxy": {"address": "192.0.2.1:1080", "tls": True}}):
        with pytest.raises(SandboxException) as info:
            Sandbox.create(network=network)
        assert info.value.status_code == 400


def test_a_domain_in_deny_out_is_refused_with_e2bs_message(e2b_server) -> None:
    # E2B takes domain names in allow_out only; deny_out takes addresses and CIDR blocks.
    with pytest.raises(SandboxException) as info:
        Sandbox.create(network={"deny_out": ["0.0.0.0/0", "pypi.org"], "allow_out": ["pypi.org"]})
    assert info.value.status_code == 400
    assert str(info.value) == "400: invalid denied CIDR pypi.org"
    with Sandbox.create() as sandbox:
        with pytest.raises(SandboxException) as info:
            sandbox.update_network({"deny_out": ["example.com"]})
        assert "invalid denied CIDR example.com" in str(info.value)
        assert sandbox.get_info().network is None
