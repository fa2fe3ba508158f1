"""A sandbox's outbound network settings (`network` and `allow_internet_access`) as an enforceable policy.

What e2b-local enforces, per E2B's rules: `denyOut` entries are refused, `allowOut` entries punch
holes in them, and `allow_internet_access=False` is a deny of all traffic. Entries are IPv4/IPv6
addresses or CIDR blocks. A domain name in `allowOut` is resolved when the rules are applied (at
create, `update_network` and resume), and the sandbox's DNS forwarder is allowed with it; E2B instead
matches the name on every connection, so here a domain whose addresses change needs the rules applied
again. Wildcard domains, per-host transform `rules` and `egressProxy` are refused with 400: e2b-local
cannot honour them, and silently ignoring a security setting would be worse.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

from e2b_local.control.errors import ApiError
from e2b_local.isolation.firewall import EgressPolicy, Network, host_resolvers

ALL_TRAFFIC = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$",
                      re.IGNORECASE)


def _string_list(network: dict[str, Any], name: str) -> list[str]:
    value = network.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"network '{name}' must be a list of strings")
    return value


def _as_network(entry: str) -> Network | None:
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return None


def _resolve(domain: str) -> list[Network]:
    try:
        infos = socket.getaddrinfo(domain, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ApiError(400, f"network allowOut: cannot resolve '{domain}': {exc.strerror}") from None
    return sorted({ipaddress.ip_network(info[4][0]) for info in infos}, key=str)


def check(network: dict[str, Any] | None) -> None:
    """Refuse what e2b-local cannot enforce, before anything is started (no name lookups here)."""
    if network is None:
        return
    if not isinstance(network, dict):
        raise ApiError(400, "'network' must be an object")
    if network.get("rules"):
        raise ApiError(400, "network 'rules' (per-host request transforms) are not supported by e2b-local")
    if network.get("egressProxy"):
        raise ApiError(400, "network 'egressProxy' is not supported by e2b-local")
    for entry in _string_list(network, "denyOut"):
        if _as_network(entry) is None:
            # E2B's text: deny rules take addresses and CIDR blocks only, never domain names.
            raise ApiError(400, f"invalid denied CIDR {entry}")
    for entry in _string_list(network, "allowOut"):
        if _as_network(entry) is None and not HOSTNAME.match(entry):
            if entry.startswith("*"):
                raise ApiError(400, f"network allowOut: wildcard domains ('{entry}') are not supported by e2b-local")
            raise ApiError(400, f"network allowOut: '{entry}' is not an IP address, CIDR block or domain name")
    for entry in _string_list(network, "dnsServers"):
        address = _as_network(entry)
        if address is None or address.version != 4 or address.num_addresses != 1:
            raise ApiError(400, f"network dnsServers: '{entry}' is not an IPv4 address")


def policy(network: dict[str, Any] | None, allow_internet_access: bool) -> EgressPolicy:
    """The rules to enforce. Blocking: resolves the domain names of `allowOut`."""
    check(network)
    network = network or {}
    deny = [n for n in (_as_network(e) for e in _string_list(network, "denyOut")) if n is not None]
    if not allow_internet_access:
        deny.extend(ALL_TRAFFIC)
    allow: list[Network] = []
    domains = False
    for entry in _string_list(network, "allowOut"):
        address = _as_network(entry)
        if address is not None:
            allow.append(address)
        else:
            domains = True
            allow.extend(_resolve(entry))
    if domains:
        # The sandbox must be able to look the names up: its resolver, slirp4netns's forwarder, asks
        # the host's name servers, and that is the traffic the host's firewall sees.
        allow.extend(host_resolvers())
        allow.extend(ipaddress.ip_network(e) for e in _string_list(network, "dnsServers"))
    return EgressPolicy(allow=tuple(dict.fromkeys(allow)), deny=tuple(dict.fromkeys(deny)))
