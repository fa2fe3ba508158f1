"""A sandbox's outbound network settings (`network` and `allow_internet_access`) as an enforceable policy.

What e2b-local enforces, per E2B's rules: `denyOut` entries are refused, `allowOut` entries punch
holes in them, and `allow_internet_access=False` is a deny of all traffic. Entries are IPv4/IPv6
addresses or CIDR blocks. A domain name in `allowOut` is resolved when the rules are applied (at
create, `update_network` and resume), and the sandbox's DNS forwarder is allowed with it; E2B instead
matches the name on every connection, so here a domain whose addresses change needs the rules applied
again. Wildcard domains are refused with 400: e2b-local cannot honour them, and silently ignoring a
security setting would be worse. Per-host transform `rules` steer the sandbox's HTTP and HTTPS
(ports 80 and 443) through the server's egress proxy; an `egressProxy` steers all of its TCP there, to
be tunnelled (TLS to the SOCKS5 proxy is refused with 400).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

from e2b_local.control.errors import ApiError
from e2b_local.isolation.firewall import EgressPolicy, Network, host_resolvers

ALL_TRAFFIC = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
# The ports whose connections go through the egress proxy when there are transform rules: HTTP, HTTPS.
TRANSFORMED_PORTS = (80, 443)
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
    _check_rules(network.get("rules"))
    _check_proxy(network.get("egressProxy"))
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


def _check_rules(rules: Any) -> None:
    if rules is None:
        return
    if not isinstance(rules, dict):
        raise ApiError(400, "network 'rules' must be an object of host names to lists of rules")
    for host, entries in rules.items():
        if _as_network(host) is None and not HOSTNAME.match(host):
            raise ApiError(400, f"network rules: '{host}' is not an IP address, CIDR block or domain name")
        if not isinstance(entries, list):
            raise ApiError(400, f"network rules for '{host}' must be a list")
        for rule in entries:
            headers = ((rule or {}).get("transform") or {}).get("headers") if isinstance(rule, dict) else None
            if not isinstance(rule, dict) or (headers is not None and not (
                    isinstance(headers, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in headers.items()))):
                raise ApiError(400, f"network rules for '{host}': a transform's headers must be strings")


def _check_proxy(proxy: Any) -> None:
    if proxy is None:
        return
    if not isinstance(proxy, dict) or not isinstance(proxy.get("address"), str):
        raise ApiError(400, "network 'egressProxy' must have an 'address' of the form host:port")
    host, _, port = proxy["address"].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ApiError(400, f"network egressProxy: '{proxy['address']}' is not of the form host:port")
    if proxy.get("password") is not None and proxy.get("username") is None:
        raise ApiError(400, "network egressProxy: a 'password' needs a 'username'")
    if (proxy.get("tls") or {}).get("enabled"):
        raise ApiError(400, "network egressProxy: TLS to the proxy is not supported by e2b-local")


def policy(network: dict[str, Any] | None, allow_internet_access: bool, proxy_port: int = 0) -> EgressPolicy:
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
    return EgressPolicy(allow=tuple(dict.fromkeys(allow)), deny=tuple(dict.fromkeys(deny)),
                        steer_ports=TRANSFORMED_PORTS if network.get("rules") else (),
                        steer_all=bool(network.get("egressProxy")), proxy_port=proxy_port)
