"""Outbound traffic rules of a sandbox, enforced with nftables inside the sandbox's network namespace.

The rules are written from the host (`nsenter --net=/proc/<pid>/ns/net nft -f -`): host root holds
CAP_NET_ADMIN over every sandbox's network namespace, while the sandbox itself runs without
CAP_NET_ADMIN (the launcher drops it from the bounding set), so root inside the sandbox can neither
read nor change them. Every packet a sandbox sends leaves through its namespace's output hook, raw
sockets included, before slirp4netns ever sees it.

E2B's semantics: a destination matching `deny` is refused unless it also matches `allow` (an allow
entry punches a hole in a deny); with no deny entry nothing is refused. Refused connections fail at
once (TCP reset, ICMP for other protocols) rather than hanging until a timeout.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass

# One table per sandbox namespace; replaced as a whole on every change.
TABLE = "e2b_egress"
APPLIED = "e2b-egress-rules-applied"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class EgressPolicy:
    """Destinations (networks) a sandbox may not reach, and exceptions to that."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

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
    """Whether the host has the `nft` and `nsenter` programs rules are applied with."""
    return shutil.which("nft") is not None and shutil.which("nsenter") is not None


def _elements(networks: list[Network]) -> str:
    return ", ".join(str(n) for n in networks)


def ruleset(policy: EgressPolicy) -> str:
    """The nftables script that replaces the sandbox's egress table with `policy`."""
    # Declaring the table before deleting it makes the delete succeed whether or not it existed.
    lines = [f"table inet {TABLE} {{}}", f"delete table inet {TABLE}"]
    if not policy.restricts:
        return "\n".join(lines) + "\n"
    lines.append(f"table inet {TABLE} {{")
    chain = ["type filter hook output priority 0; policy accept;", 'oifname "lo" accept']
    for family, version in (("ip", 4), ("ip6", 6)):
        addr_type = "ipv4_addr" if version == 4 else "ipv6_addr"
        for kind, networks in (("allow", policy.allow), ("deny", policy.deny)):
            chosen = [n for n in networks if n.version == version]
            if not chosen:
                continue
            name = f"{kind}{version}"
            lines.append(f"  set {name} {{ type {addr_type}; flags interval; auto-merge; "
                         f"elements = {{ {_elements(chosen)} }} }}")
            if kind == "allow":
                chain.append(f"{family} daddr @{name} accept")
            else:
                chain.append(f"{family} daddr @{name} meta l4proto tcp reject with tcp reset")
                chain.append(f"{family} daddr @{name} reject")
    lines.append("  chain output {")
    lines.extend(f"    {rule}" for rule in chain)
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def apply(pid: int, policy: EgressPolicy) -> None:
    """Replace the egress rules of the network namespace process `pid` lives in."""
    if not policy.restricts and not available():
        return  # nothing to enforce, and nothing can have been enforced before
    if not available():
        raise RuntimeError("outbound network rules need nftables on the host (apt-get install nftables)")
    # Success is read from the output, not the exit status: the server reaps orphaned sandbox
    # processes with waitpid(-1), which can take a child's status before subprocess sees it.
    result = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "sh", "-c", f"nft -f - && echo {APPLIED}"],
        input=ruleset(policy), capture_output=True, text=True,
    )
    if APPLIED not in result.stdout:
        raise RuntimeError(f"could not apply the sandbox's network rules: {result.stderr.strip()}")

