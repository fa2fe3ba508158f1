"""Which service a request's Host names in domain mode: the API, a sandbox's port, or neither."""

from __future__ import annotations

import re
from dataclasses import dataclass

# `<port>-<sandbox id>`, the first label of a sandbox host (the SDK's get_host).
SANDBOX_LABEL = re.compile(r"([0-9]{1,5})-([a-z0-9][a-z0-9_-]*)")


@dataclass(frozen=True)
class SandboxHost:
    """`https://<port>-<sandbox_id>.<domain>`: that port inside that sandbox."""

    sandbox_id: str
    port: int


def parse(host: bytes | None, domain: str) -> SandboxHost | None:
    """The sandbox port `host` names under `domain`, or None for anything else (the API included)."""
    if not host:
        return None
    name = host.decode("latin-1").lower()
    if name.startswith("["):  # an IPv6 literal names no sandbox
        return None
    name = name.rsplit(":", 1)[0].rstrip(".")
    label, _, rest = name.partition(".")
    if rest != domain:
        return None
    match = SANDBOX_LABEL.fullmatch(label)
    if match is None or not 1 <= int(match[1]) <= 65535:
        return None
    return SandboxHost(match[2], int(match[1]))
