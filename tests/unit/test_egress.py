"""Outbound network settings (`network`, `allow_internet_access`) turned into an enforceable policy."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from e2b_local.control.errors import ApiError
from e2b_local.control.fleet import egress
from e2b_local.isolation.firewall import EgressPolicy, host_resolvers

ALL = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]


def _refusal(network: object) -> str:
    with pytest.raises(ApiError) as caught:
        egress.check(network)  # type: ignore[arg-type]
    assert caught.value.status == 400
    return caught.value.message


def test_no_settings_allow_everything() -> None:
    policy = egress.policy(None, True)
    assert policy == EgressPolicy()
    assert not policy.restricts
    assert not policy.denies_everything


def test_no_internet_denies_all_traffic() -> None:
    policy = egress.policy(None, False)
    assert list(policy.deny) == ALL
    assert policy.allow == ()
    assert policy.denies_everything


def test_a_hole_in_a_deny_all_keeps_the_network_stack() -> None:
    policy = egress.policy({"allowOut": ["10.1.2.3", "2001:db8::/64"]}, False)
    assert list(policy.deny) == ALL
    assert [str(n) for n in policy.allow] == ["10.1.2.3/32", "2001:db8::/64"]
    assert policy.restricts
    assert not policy.denies_everything


def test_deny_entries_are_normalised_and_deduplicated() -> None:
    # A host address with a prefix is taken as its network, as E2B does (strict=False).
    policy = egress.policy({"denyOut": ["192.168.1.7/24", " 192.168.1.0/24 ", "8.8.8.8"]}, True)
    assert [str(n) for n in policy.deny] == ["192.168.1.0/24", "8.8.8.8/32"]
    assert policy.restricts and not policy.denies_everything


def test_deny_all_via_deny_out_is_everything() -> None:
    assert egress.policy({"denyOut": ["0.0.0.0/0", "::/0"]}, True).denies_everything
    # Only IPv4 refused: IPv6 traffic could still leave.
    assert not egress.policy({"denyOut": ["0.0.0.0/0"]}, True).denies_everything


def test_a_domain_in_allow_out_is_resolved_and_opens_dns() -> None:
    policy = egress.policy({"allowOut": ["localhost"], "dnsServers": ["9.9.9.9"]}, False)
    allowed = {str(n) for n in policy.allow}
    assert "127.0.0.1/32" in allowed
    assert "9.9.9.9/32" in allowed
    assert {str(n) for n in host_resolvers()} <= allowed


def test_dns_servers_alone_open_nothing() -> None:
    # Without a domain to look up, the resolvers need no hole.
    assert egress.policy({"allowOut": ["1.1.1.1"], "dnsServers": ["9.9.9.9"]}, False).allow == (
        ipaddress.ip_network("1.1.1.1/32"),)


@pytest.mark.parametrize(("network", "message"), [
    ("deny", "'network' must be an object"),
    ({"rules": [{"host": "x"}]}, "network 'rules' must be an object of host names to lists of rules"),
    ({"rules": {"a b": []}}, "network rules: 'a b' is not an IP address, CIDR block or domain name"),
    ({"rules": {"x.com": [{"transform": {"headers": {"A": 1}}}]}},
     "network rules for 'x.com': a transform's headers must be strings"),
    ({"egressProxy": {"url": "http://p"}}, "network 'egressProxy' must have an 'address' of the form host:port"),
    ({"egressProxy": {"address": "p"}}, "network egressProxy: 'p' is not of the form host:port"),
    ({"egressProxy": {"address": "p:1", "tls": {"enabled": True}}},
     "network egressProxy: TLS to the proxy is not supported by e2b-local"),
    ({"denyOut": "10.0.0.0/8"}, "network 'denyOut' must be a list of strings"),
    ({"allowOut": [1]}, "network 'allowOut' must be a list of strings"),
    ({"denyOut": ["example.com"]}, "invalid denied CIDR example.com"),
    ({"denyOut": ["0.0.0.0/0", "pypi.org"]}, "invalid denied CIDR pypi.org"),
    ({"allowOut": ["*.example.com"]}, "network allowOut: wildcard domains ('*.example.com') are not supported "
                                      "by e2b-local"),
    ({"allowOut": ["bad_name!"]}, "network allowOut: 'bad_name!' is not an IP address, CIDR block or domain name"),
    ({"allowOut": ["-leading.example"]}, "network allowOut: '-leading.example' is not an IP address, CIDR block "
                                         "or domain name"),
    ({"dnsServers": ["2001:db8::1"]}, "network dnsServers: '2001:db8::1' is not an IPv4 address"),
    ({"dnsServers": ["10.0.0.0/8"]}, "network dnsServers: '10.0.0.0/8' is not an IPv4 address"),
])
def test_unenforceable_settings_are_refused(network: object, message: str) -> None:
    assert _refusal(network) == message


def test_policy_refuses_before_resolving() -> None:
    # A bad entry fails the whole request, even next to a name that would need a lookup.
    with pytest.raises(ApiError) as caught:
        egress.policy({"allowOut": ["localhost"], "denyOut": ["example.com"]}, True)
    assert caught.value.status == 400


def test_valid_names_and_addresses_pass_the_check() -> None:
    egress.check({"allowOut": ["pypi.org", "a-b.c0.example", "10.0.0.1", "fd00::/8"],
                  "denyOut": ["0.0.0.0/0"], "dnsServers": ["1.1.1.1"], "rules": {}, "egressProxy": None})


def test_host_resolvers_reads_nameserver_lines(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n"
                    "nameserver not-an-address\nnameserver\noptions edns0\n")
    assert [str(n) for n in host_resolvers(conf)] == ["127.0.0.53/32", "fe80::1/128"]
    assert host_resolvers(tmp_path / "missing") == []


def test_rules_steer_http_and_https_and_a_proxy_steers_all_tcp() -> None:
    rules = {"rules": {"api.example.com": [{"transform": {"headers": {"X-A": "b"}}}]}}
    steered = egress.policy(rules, True, proxy_port=4000)
    assert steered.steer_ports == (80, 443) and not steered.steer_all and steered.steers
    tunnelled = egress.policy({"egressProxy": {"address": "10.1.2.3:1080"}}, True, proxy_port=4000)
    assert tunnelled.steer_all and tunnelled.steers
    assert not egress.policy(rules, True).steers  # no proxy running: nothing to steer to
