"""The fleet's values: what a new sandbox starts from and with, and a running sandbox's connections."""

from __future__ import annotations

import functools
import secrets
import ssl
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from e2b_local.control.fleet.metrics import MetricsSeries
from e2b_local.control.fleet.upstream import AgentUpstream
from e2b_local.control.registry import Lifecycle
from e2b_local.isolation.cgroups import Limits
from e2b_local.isolation.container import Container
from e2b_local.protocol import TEMPLATES

# E2B sandbox ids are 20 lowercase letters and digits.
ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 20


def new_id(prefix: str = "") -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def builtin_template(template: str) -> str | None:
    """The built-in template `template` names (`name`, `name:tag` or `namespace/name`), if any."""
    name = template.split("/")[-1].split(":")[0]
    return name if name in TEMPLATES else None


@dataclass
class Source:
    """What a new sandbox starts from: a built-in template, or saved files over a template's layers."""

    template_id: str
    alias: str | None
    base_template: str
    layers: list[Path] | None = None  # None: the template's current layers
    files: Path | None = None  # an upper layer to copy; None: empty
    env_vars: dict[str, str] = field(default_factory=dict)
    # A custom template's CPU and memory (None: the server's defaults), and what runs once its agent is
    # up (the template's start command and ready check), before create returns.
    limits: Limits | None = None
    after_boot: Callable[[httpx.AsyncClient], Awaitable[None]] | None = None
    # The user and working directory of commands that name none (None: E2B's `user`, `/home/user`).
    default_user: str | None = None
    default_workdir: str | None = None
    # The custom template (its id) whose pre-started sandboxes may serve it, when it has `layers` of
    # its own; None: it always boots fresh.
    pool_owner: str | None = None


@dataclass(frozen=True)
class SpawnOptions:
    """What a new sandbox is started with, besides its source (create's and a fork's settings)."""

    timeout: int | None = None  # None: E2B's default
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    allow_internet_access: bool | None = None  # None: allowed
    network: dict[str, Any] | None = None
    lifecycle: Lifecycle | None = None
    auto_pause_memory: bool = True
    # Volumes to mount: {"name", "path"} as E2B reports them, and "source", the host directory.
    volume_mounts: tuple[dict[str, str], ...] = ()


def volume_binds(mounts: list[dict[str, str]] | tuple[dict[str, str], ...]) -> list[tuple[str, str]]:
    """The (host directory, mount point) pairs the launcher binds for a sandbox's volume mounts."""
    return [(m["source"], m["path"]) for m in mounts]


@dataclass
class Booted:
    """A sandbox whose agent is running, not yet (or no longer) assigned to a record."""

    container: Container
    pid: int
    slirp_pid: int
    internet: bool
    layers: list[Path]


@functools.cache
def _no_tls() -> ssl.SSLContext:
    # httpx builds a TLS context for every transport, loading the certificate store into it: some
    # 70 ms of the event loop's time and a megabyte per sandbox. Agents speak plain HTTP on a Unix
    # socket, so they share one context that is never used.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def agent_transport(container: Container) -> httpx.AsyncHTTPTransport:
    """A transport to the sandbox's agent, on its Unix socket."""
    return httpx.AsyncHTTPTransport(uds=container.connect_path(), verify=_no_tls())


def agent_client(container: Container, timeout: float | None = None) -> httpx.AsyncClient:
    """A client for the control plane's own calls to the sandbox's agent (/init, health, builds)."""
    return httpx.AsyncClient(transport=agent_transport(container), base_url="http://sandbox", timeout=timeout)


@dataclass
class Live:
    """Runtime state of a registered sandbox that is not persisted."""

    container: Container
    client: httpx.AsyncClient
    # The proxy's own connections; the httpx client serves the control plane's calls.
    upstream: AgentUpstream
    metrics: MetricsSeries = field(default_factory=MetricsSeries)
    # A duplicate of the top process's pidfd, registered with the event loop while it is watched.
    watch_fd: int | None = None

    @classmethod
    def connect(cls, container: Container, client: httpx.AsyncClient | None = None) -> Live:
        """The connections to a sandbox's agent (`client` when one is open already)."""
        return cls(container, client or agent_client(container), AgentUpstream(container.connect_path()))

    def reconnect(self) -> None:
        """New connections to a freshly booted agent (the old ones are closed)."""
        self.client = agent_client(self.container)
        self.upstream = AgentUpstream(self.container.connect_path())

    async def aclose(self) -> None:
        """Close every connection to the agent (before it goes away or is replaced)."""
        await self.client.aclose()
        await self.upstream.aclose()
