"""The nftables scripts the host firewall applies (generated text only; nothing is applied here)."""

from __future__ import annotations

import ipaddress

from e2b_local.isolation.firewall import (
    DIRECT_GID,
    TUNNEL_GID,
    EgressPolicy,
    base_ruleset,
    removal_ruleset,
    sandbox_ruleset,
)
from e2b_local.isolation.owners import OWNER_BASE, OWNER_COUNT

OWNER = OWNER_BASE + 42


def _nets(*entries: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e) for e in entries)


def test_base_ruleset_jumps_for_the_owner_range_only() -> None:
    script = base_ruleset([])
    assert script.startswith("table inet e2b_local {\n")
    assert script.endswith("\n")
    assert f"add rule inet e2b_local output meta skuid {OWNER_BASE}-{OWNER_BASE + OWNER_COUNT - 1} jump sandboxes" \
        in script.splitlines()


def test_base_ruleset_is_idempotent_by_flushing_shared_chains() -> None:
    lines = base_ruleset([]).splitlines()
    assert "flush chain inet e2b_local output" in lines
    assert "flush chain inet e2b_local sandboxes" in lines
    # Each sandbox's own chain is left alone: the script names none.
    assert not any("sandbox_" in line for line in lines)


def test_per_sandbox_rules_come_before_the_host_protections() -> None:
    rules = [line for line in base_ruleset(list(_nets("127.0.0.53", "::1"))).splitlines()
             if line.startswith("add rule inet e2b_local sandboxes ")]
    bodies = [line.removeprefix("add rule inet e2b_local sandboxes ") for line in rules]
    assert bodies == [
        "meta skuid vmap @sandboxes",
        "ip daddr { 127.0.0.53/32 } meta l4proto { tcp, udp } th dport 53 accept",
        "ip6 daddr { ::1/128 } meta l4proto { tcp, udp } th dport 53 accept",
        "fib daddr type { local, broadcast, multicast } meta l4proto tcp reject with tcp reset",
        "fib daddr type { local, broadcast, multicast } reject",
        "ip daddr 169.254.0.0/16 meta l4proto tcp reject with tcp reset",
        "ip daddr 169.254.0.0/16 reject",
        "ip6 daddr fe80::/10 reject",
    ]


def test_no_resolvers_means_no_dns_exception() -> None:
    assert "dport 53" not in base_ruleset([])
    dns = [line for line in base_ruleset(list(_nets("10.0.0.2"))).splitlines() if "dport 53" in line]
    assert dns == ["add rule inet e2b_local sandboxes ip daddr { 10.0.0.2/32 } meta l4proto { tcp, udp } "
                   "th dport 53 accept"]


# What every script without steering ends with: the sandbox's steering chain, if any, removed.
UNSTEERED = [
    f"add chain inet e2b_local steer_{OWNER}",
    f"add element inet e2b_local steered {{ {OWNER} : jump steer_{OWNER} }}",
    f"delete element inet e2b_local steered {{ {OWNER} }}",
    f"delete chain inet e2b_local steer_{OWNER}",
]


def test_steering_redirects_only_to_the_proxy_and_accepts_only_what_it_redirected() -> None:
    lines = sandbox_ruleset(OWNER, EgressPolicy(steer_ports=(80, 443), proxy_port=4321)).splitlines()
    chain, steer = f"sandbox_{OWNER}", f"steer_{OWNER}"
    assert lines[2:4] == [
        f"add rule inet e2b_local {chain} meta skgid {TUNNEL_GID} return",
        f"add rule inet e2b_local {chain} ip daddr 127.0.0.1 tcp dport 4321 ct status dnat accept",
    ]
    steering = [line for line in lines if f" {steer} " in line and line.startswith("add rule")]
    assert steering[0] == f"add rule inet e2b_local {steer} meta skgid {{ {DIRECT_GID}, {TUNNEL_GID} }} return"
    assert f"add rule inet e2b_local {steer} fib daddr type {{ local, broadcast, multicast }} return" in steering
    assert steering[-1] == \
        f"add rule inet e2b_local {steer} meta nfproto ipv4 tcp dport {{ 80, 443 }} redirect to :4321"
    assert lines[-1] == f"add element inet e2b_local steered {{ {OWNER} : jump {steer} }}"
    tunnelled = sandbox_ruleset(OWNER, EgressPolicy(steer_all=True, proxy_port=4321))
    redirect = f"add rule inet e2b_local {steer} meta nfproto ipv4 meta l4proto tcp redirect to :4321"
    assert redirect in tunnelled.splitlines()
    assert f"add rule inet e2b_local {chain} meta nfproto ipv6 meta l4proto tcp reject with tcp reset" in tunnelled


def test_sandbox_ruleset_without_restrictions_only_registers_the_chain() -> None:
    assert sandbox_ruleset(OWNER, EgressPolicy()).splitlines() == [
        f"add chain inet e2b_local sandbox_{OWNER}",
        f"flush chain inet e2b_local sandbox_{OWNER}",
        f"add element inet e2b_local sandboxes {{ {OWNER} : jump sandbox_{OWNER} }}",
        *UNSTEERED,
    ]


def test_sandbox_ruleset_allows_holes_before_denying() -> None:
    policy = EgressPolicy(allow=_nets("10.1.2.3", "2001:db8::/64"), deny=_nets("0.0.0.0/0", "::/0"))
    chain = f"sandbox_{OWNER}"
    assert sandbox_ruleset(OWNER, policy).splitlines() == [
        f"add chain inet e2b_local {chain}",
        f"flush chain inet e2b_local {chain}",
        f"add rule inet e2b_local {chain} ip daddr {{ 10.1.2.3/32 }} return",
        f"add rule inet e2b_local {chain} ip daddr {{ 0.0.0.0/0 }} meta l4proto tcp reject with tcp reset",
        f"add rule inet e2b_local {chain} ip daddr {{ 0.0.0.0/0 }} reject",
        f"add rule inet e2b_local {chain} ip6 daddr {{ 2001:db8::/64 }} return",
        f"add rule inet e2b_local {chain} ip6 daddr {{ ::/0 }} meta l4proto tcp reject with tcp reset",
        f"add rule inet e2b_local {chain} ip6 daddr {{ ::/0 }} reject",
        f"add element inet e2b_local sandboxes {{ {OWNER} : jump {chain} }}",
        *UNSTEERED,
    ]


def test_allow_without_a_matching_deny_adds_no_rule() -> None:
    # Nothing of that family is refused, so an exception would be meaningless.
    script = sandbox_ruleset(OWNER, EgressPolicy(allow=_nets("2001:db8::1"), deny=_nets("10.0.0.0/8")))
    assert "ip6" not in script
    assert "ip daddr { 10.0.0.0/8 } reject" in script
    assert "return" not in script


def test_several_entries_share_one_set() -> None:
    script = sandbox_ruleset(OWNER, EgressPolicy(deny=_nets("10.0.0.0/8", "192.168.0.0/16")))
    assert f"add rule inet e2b_local sandbox_{OWNER} ip daddr {{ 10.0.0.0/8, 192.168.0.0/16 }} reject" \
        in script.splitlines()


def test_removal_declares_before_deleting() -> None:
    # Declaring first makes the deletes succeed whether or not the rules were ever applied.
    assert removal_ruleset(OWNER).splitlines() == [
        f"add chain inet e2b_local sandbox_{OWNER}",
        f"add element inet e2b_local sandboxes {{ {OWNER} : jump sandbox_{OWNER} }}",
        f"delete element inet e2b_local sandboxes {{ {OWNER} }}",
        f"delete chain inet e2b_local sandbox_{OWNER}",
        *UNSTEERED,
    ]
