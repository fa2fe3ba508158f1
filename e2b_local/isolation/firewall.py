"""Where sandbox traffic may go, enforced by nftables in the host's network namespace.

Everything a sandbox sends to the outside leaves through its slirp4netns, which re-makes each
connection from the host as the sandbox's owner uid (owners.py). One host-wide table matches those
sockets by uid, so the rules sit where nothing inside a sandbox can reach them, whatever packets it
builds: the sandbox's own namespace holds no rule it could change or bypass.

For every sandbox, always: no destination that is this host (any local address: loopback,
0.0.0.0, the host's interface addresses, broadcast and multicast) and nothing link-local
(169.254.0.0/16, where cloud metadata services live, and fe80::/10). The one exception is DNS to
the resolvers of /etc/resolv.conf, which slirp4netns's forwarder relays to even when they listen on
the host's loopback (systemd-resolved). Before those, per sandbox, E2B's semantics: a destination
matching `deny` is refused unless it also matches `allow` (an allowed destination still passes the
rules above: no policy opens the host). Refused connections fail at once (TCP reset,
ICMP for other protocols) rather than hanging until a timeout.

A sandbox with per-host transforms or an egress proxy has its TCP steered (DNAT, in a nat chain of
its own) to the server's egress proxy on the host's loopback; its own chain accepts exactly those
redirected connections. The proxy dials on the sandbox's behalf with sockets it creates as the
sandbox's owner uid (and a group of the proxy's, which exempts them from steering): they pass the
same rules as the sandbox's own connections, so the proxy can reach nothing the sandbox could not.
Its hop to a SOCKS5 egress proxy (TUNNEL_GID) skips only the sandbox's allow/deny lists, which E2B
applies to the tunnelled destination, never the refusal of this host's addresses.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from e2b_local.isolation.owners import OWNER_BASE, OWNER_COUNT

TABLE = "e2b_local"
APPLIED = "e2b-firewall-applied"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Groups of the egress proxy's own sockets (below the owner range, no account's): dialling a
# destination directly, and the hop to a SOCKS5 egress proxy.
DIRECT_GID = OWNER_BASE - 2
TUNNEL_GID = OWNER_BASE - 1
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class EgressPolicy:
    """Destinations (networks) a sandbox may not reach, and exceptions to that."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    # TCP steered to the egress proxy on the host's loopback: these destination ports, or all of them.
    steer_ports: tuple[int, ...] = ()
    steer_all: bool = False
    proxy_port: int = 0

    @property
    def steers(self) -> bool:
        """True when some of the sandbox's connections go through the egress proxy."""
        return bool(self.proxy_port) and (self.steer_all or bool(self.steer_ports))

    @property
    def restricts(self) -> bool:
        """True when some destination is refused (no deny entry means all traffic is allowed)."""
        return bool(self.deny)

    @property
    def denies_everything(self) -> bool:
        """True when no outbound connection can succeed (so the sandbox needs no network stack)."""
        every = {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}
        return not self.allow and every <= set(self.deny)


def available() -> bool:
    """Whether the host has the `nft` program the rules are applied with."""
    return shutil.which("nft") is not None


def _elements(networks: list[Network] | tuple[Network, ...]) -> str:
    return ", ".join(str(n) for n in networks)


def host_resolvers(resolv_conf: Path = RESOLV_CONF) -> list[Network]:
    """The name servers of `resolv_conf` (slirp4netns's DNS forwarder sends queries there)."""
    found: list[Network] = []
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                found.append(ipaddress.ip_network(parts[1].split("%")[0]))
            except ValueError:
                continue
    return found


def chain_name(owner: int) -> str:
    return f"sandbox_{owner}"


def steer_chain_name(owner: int) -> str:
    return f"steer_{owner}"


def base_ruleset(resolvers: list[Network]) -> str:
    """The table's shared part: every sandbox's traffic, and the rules that hold for all of them.

    Idempotent (the shared chains are declared, flushed and refilled in one transaction, leaving each
    sandbox's own chain alone), so every server applies it at start and with every change.
    """
    last = OWNER_BASE + OWNER_COUNT - 1
    # Each sandbox's own rules first: they refuse what its policy denies and return otherwise, so that
    # nothing a policy allows can open the host's addresses below.
    rules = ["meta skuid vmap @sandboxes"]
    for family, version in (("ip", 4), ("ip6", 6)):
        chosen = [n for n in resolvers if n.version == version]
        if chosen:
            rules.append(f"{family} daddr {{ {_elements(chosen)} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
    rules += [
        "fib daddr type { local, broadcast, multicast } meta l4proto tcp reject with tcp reset",
        "fib daddr type { local, broadcast, multicast } reject",
        f"ip daddr {LINK_LOCAL[0]} meta l4proto tcp reject with tcp reset",
        f"ip daddr {LINK_LOCAL[0]} reject",
        f"ip6 daddr {LINK_LOCAL[1]} reject",
    ]
    lines = [
        f"table inet {TABLE} {{",
        "  map sandboxes { typeof meta skuid : verdict; }",
        "  chain output { type filter hook output priority 0; policy accept; }",
        "  chain sandboxes { }",
        "  map steered { typeof meta skuid : verdict; }",
        "  chain steering { type nat hook output priority -100; policy accept; }",
        "}",
        f"flush chain inet {TABLE} steering",
        f"add rule inet {TABLE} steering meta skuid {OWNER_BASE}-{last} meta l4proto tcp meta skuid vmap @steered",
        f"flush chain inet {TABLE} output",
        f"flush chain inet {TABLE} sandboxes",
        f"add rule inet {TABLE} output meta skuid {OWNER_BASE}-{last} jump sandboxes",
        *(f"add rule inet {TABLE} sandboxes {rule}" for rule in rules),
    ]
    return "\n".join(lines) + "\n"


def sandbox_ruleset(owner: int, policy: EgressPolicy) -> str:
    """The script that replaces sandbox `owner`'s own rules with `policy`."""
    chain = chain_name(owner)
    lines = [
        f"add chain inet {TABLE} {chain}",
        f"flush chain inet {TABLE} {chain}",
    ]
    if policy.steers:
        # The egress proxy's hop to a SOCKS5 proxy: not judged by the lists (the destination it carries
        # was), but by the refusal of the host's addresses after this chain.
        lines.append(f"add rule inet {TABLE} {chain} meta skgid {TUNNEL_GID} return")
        # Only connections this sandbox's steering chain redirected; the proxy judges what it dials.
        lines.append(f"add rule inet {TABLE} {chain} ip daddr 127.0.0.1 tcp dport {policy.proxy_port} "
                     "ct status dnat accept")
    for family, version in (("ip", 4), ("ip6", 6)):
        allow = [n for n in policy.allow if n.version == version]
        deny = [n for n in policy.deny if n.version == version]
        if allow and deny:
            lines.append(f"add rule inet {TABLE} {chain} {family} daddr {{ {_elements(allow)} }} return")
        if deny:
            lines.append(f"add rule inet {TABLE} {chain} {family} daddr {{ {_elements(deny)} }} "
                         "meta l4proto tcp reject with tcp reset")
            lines.append(f"add rule inet {TABLE} {chain} {family} daddr {{ {_elements(deny)} }} reject")
    lines.append(f"add element inet {TABLE} sandboxes {{ {owner} : jump {chain} }}")
    return "\n".join(lines + steering_ruleset(owner, policy)) + "\n"


def steering_ruleset(owner: int, policy: EgressPolicy) -> list[str]:
    """The lines that steer sandbox `owner`'s TCP to the egress proxy (or stop steering it)."""
    chain = steer_chain_name(owner)
    lines = [
        f"add chain inet {TABLE} {chain}",
        f"add element inet {TABLE} steered {{ {owner} : jump {chain} }}",
        f"delete element inet {TABLE} steered {{ {owner} }}",
        f"delete chain inet {TABLE} {chain}",
    ]
    if not policy.steers:
        return lines
    lines += [
        f"add chain inet {TABLE} {chain}",
        f"add rule inet {TABLE} {chain} meta skgid {{ {DIRECT_GID}, {TUNNEL_GID} }} return",
        # Never redirected: what is refused anyway (it stays refused by the filter, at once).
        f"add rule inet {TABLE} {chain} fib daddr type {{ local, broadcast, multicast }} return",
        f"add rule inet {TABLE} {chain} ip daddr {LINK_LOCAL[0]} return",
    ]
    resolvers = [n for n in host_resolvers() if n.version == 4]
    if resolvers:
        lines.append(f"add rule inet {TABLE} {chain} ip daddr {{ {_elements(resolvers)} }} tcp dport 53 return")
    listed = ", ".join(str(p) for p in policy.steer_ports)
    ports = "meta l4proto tcp " if policy.steer_all else f"tcp dport {{ {listed} }} "
    lines += [
        f"add rule inet {TABLE} {chain} meta nfproto ipv4 {ports}redirect to :{policy.proxy_port}",
        # Fail closed: what cannot be steered (IPv6) does not leave at all.
        *([f"add rule inet {TABLE} {chain_name(owner)} meta nfproto ipv6 meta l4proto tcp reject with tcp reset"]
          if policy.steer_all else []),
        f"add element inet {TABLE} steered {{ {owner} : jump {chain} }}",
    ]
    return lines


def removal_ruleset(owner: int) -> str:
    """The script that forgets sandbox `owner`'s rules (declaring first makes it succeed either way)."""
    chain = chain_name(owner)
    return "\n".join([
        f"add chain inet {TABLE} {chain}",
        f"add element inet {TABLE} sandboxes {{ {owner} : jump {chain} }}",
        f"delete element inet {TABLE} sandboxes {{ {owner} }}",
        f"delete chain inet {TABLE} {chain}",
        *steering_ruleset(owner, EgressPolicy()),
    ]) + "\n"


def _run(script: str) -> None:
    if not available():
        raise RuntimeError("sandbox network rules need nftables on the host (apt-get install nftables)")
    # Success is read from the output, not the exit status: the server reaps orphaned sandbox
    # processes with waitpid(-1), which can take a child's status before subprocess sees it.
    result = subprocess.run(["sh", "-c", f"nft -f - && echo {APPLIED}"], input=script, capture_output=True,
                            text=True)
    if APPLIED not in result.stdout:
        raise RuntimeError(f"could not apply sandbox network rules: {result.stderr.strip()}")


def install() -> None:
    """Make sure the host-wide table and its shared rules are in place (before any sandbox starts)."""
    _run(base_ruleset(host_resolvers()))


def apply(owner: int, policy: EgressPolicy) -> None:
    """Replace the outbound rules of the sandbox owned by `owner`."""
    _run(base_ruleset(host_resolvers()) + sandbox_ruleset(owner, policy))


def remove(owner: int) -> None:
    """Drop the rules of the sandbox owned by `owner` (when it stops, or its owner is reclaimed)."""
    _run(removal_ruleset(owner))
