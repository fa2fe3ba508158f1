"""The server's settings, read once from the environment and validated, and its data directory's layout.

The CLI builds one `Settings` and passes it down; nothing else reads the environment for configuration.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# 49980 sits just below envd's 49983 and the code interpreter's 49999, so the three read as a family.
DEFAULT_PORT = 49980
# The SDK (2.24 to 2.60) rejects keys that do not look like E2B's: "e2b_" and 40 hex digits.
API_KEY_HEX_DIGITS = 40
# Defaults of E2B's base template: 2 vCPUs; memory and disk are generous for one machine.
DEFAULT_CPU_COUNT = 2
DEFAULT_MEMORY_MB = 1024
DEFAULT_DISK_MB = 10240
# Each volume's size: writes past it fail with ENOSPC.
DEFAULT_VOLUME_MB = 10240
# Enough for any ordinary workload, and a ceiling for fork bombs.
DEFAULT_MAX_PIDS = 1024
# Pre-started sandboxes kept per template, so that create returns at once.
DEFAULT_POOL_SIZE = 1
# How far the warm pool of a built-in template may grow while creates ask for more (see fleet/pool.py).
DEFAULT_POOL_MAX = 10
# Custom templates that keep one pre-started sandbox each: the ones created from most recently.
DEFAULT_TEMPLATE_POOL = 2
# Template builds at once (each step boots a sandbox; the others wait), how long a template's ready
# check may take to pass, and how long an image pull may take, in seconds.
DEFAULT_BUILD_CONCURRENCY = 2
DEFAULT_READY_TIMEOUT = 120
DEFAULT_PULL_TIMEOUT = 600
# Domain mode: `*.localhost` resolves to loopback (libnss-myhostname), and the HTTPS port sits beside 49980.
# How sandboxes' agents start (see isolation/launcher.py): forked from a zygote, or executed afresh.
AGENT_STARTS = ("fork", "exec")
DEFAULT_AGENT_START = "fork"
DEFAULT_DOMAIN = "e2b.localhost"
DEFAULT_HTTPS_PORT = 49443
DOMAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def default_boot_concurrency() -> int:
    """Boots at once: a boot spends about half its time waiting, so three per core keep the cores busy."""
    return 3 * (os.cpu_count() or 2)


@dataclass(frozen=True)
class SettingInfo:
    """One `E2B_LOCAL_*` variable as the CLI's help, `e2b-local config` and the docs list it."""

    name: str
    attr: str  # the `Settings` field it sets
    default: str
    meaning: str


# Every setting, in the order the help, the README and references/local-sandboxes.md list them.
CATALOGUE = (
    SettingInfo("E2B_LOCAL_HOME", "home", "/var/lib/e2b-local for root, else ~/.local/share/e2b-local",
                "data directory: API key (mode 0600), registry, sandboxes, server.log"),
    SettingInfo("E2B_LOCAL_PORT", "port", str(DEFAULT_PORT),
                "the one port the server listens on (127.0.0.1 only); also --port"),
    SettingInfo("E2B_LOCAL_ROOTFS", "rootfs", "rootfs in the data directory",
                "cache of built root filesystems and of the agent's compiled code, shareable between data "
                "directories"),
    SettingInfo("E2B_LOCAL_MEMORY_MB", "memory_mb", str(DEFAULT_MEMORY_MB),
                "memory limit of each sandbox's programs (its agent may use 128 MiB more)"),
    SettingInfo("E2B_LOCAL_CPU_COUNT", "cpu_count", str(DEFAULT_CPU_COUNT), "CPU limit of each sandbox (a CFS quota)"),
    SettingInfo("E2B_LOCAL_MAX_PIDS", "max_pids", str(DEFAULT_MAX_PIDS), "process limit of each sandbox"),
    SettingInfo("E2B_LOCAL_DISK_MB", "disk_mb", str(DEFAULT_DISK_MB),
                "each sandbox's disk (its own filesystem: writes past it fail with ENOSPC)"),
    SettingInfo("E2B_LOCAL_VOLUME_MB", "volume_mb", str(DEFAULT_VOLUME_MB),
                "each volume's size (its own filesystem: writes past it fail with ENOSPC)"),
    SettingInfo("E2B_LOCAL_POOL_SIZE", "pool_size", str(DEFAULT_POOL_SIZE),
                "pre-started sandboxes per built-in template, so create returns at once (0: none, for custom "
                "templates too)"),
    SettingInfo("E2B_LOCAL_POOL_MAX", "pool_max", str(DEFAULT_POOL_MAX),
                "how far a built-in template's pool grows while creates come in bursts (within a quarter of the "
                "available memory; back to E2B_LOCAL_POOL_SIZE 30 s after they stop)"),
    SettingInfo("E2B_LOCAL_TEMPLATE_POOL", "template_pool", str(DEFAULT_TEMPLATE_POOL),
                "custom templates, the ones created from last, that keep one pre-started sandbox each (0: none)"),
    SettingInfo("E2B_LOCAL_BOOT_CONCURRENCY", "boot_concurrency", "3 per core", "sandboxes booted at once"),
    SettingInfo("E2B_LOCAL_AGENT_START", "agent_start", DEFAULT_AGENT_START,
                "how sandboxes' agents and Python kernels start: fork (from pre-imported zygotes, in milliseconds) "
                "or exec (afresh, the agent by bubblewrap)"),
    SettingInfo("E2B_LOCAL_MERGE_PAGES", "merge_pages", "0",
                "1: the kernel merges sandboxes' identical memory pages (KSM, turned on host-wide), so an idle "
                "sandbox takes a quarter to a third of the memory, at the cost of a side channel between "
                "sandboxes (see references/local-sandboxes.md)"),
    SettingInfo("E2B_LOCAL_DOMAIN", "domain", DEFAULT_DOMAIN,
                "domain mode's domain: https://api.<domain> and https://<port>-<id>.<domain> (resolves to loopback)"),
    SettingInfo("E2B_LOCAL_HTTPS_PORT", "https_port", str(DEFAULT_HTTPS_PORT),
                "domain mode's HTTPS port (127.0.0.1 and ::1; 0: no HTTPS listener)"),
    SettingInfo("E2B_LOCAL_LOG_REQUESTS", "log_requests", "0", "1: log every HTTP request in server.log"),
    SettingInfo("E2B_LOCAL_BUILD_CONCURRENCY", "build_concurrency", str(DEFAULT_BUILD_CONCURRENCY),
                "template builds that run at once (the others wait)"),
    SettingInfo("E2B_LOCAL_READY_TIMEOUT", "ready_timeout", str(DEFAULT_READY_TIMEOUT),
                "seconds a custom template's ready check may take to pass"),
    SettingInfo("E2B_LOCAL_PULL_TIMEOUT", "pull_timeout", str(DEFAULT_PULL_TIMEOUT),
                "seconds a from_image pull may take (skopeo's --command-timeout)"),
)


class SettingsError(ValueError):
    """A setting has a value it cannot take; the message names the variable."""


@dataclass(frozen=True)
class Paths:
    """The layout of the data directory."""

    home: Path
    # Where built root filesystems are cached when not under the data directory (E2B_LOCAL_ROOTFS).
    rootfs_cache: Path | None = None

    @property
    def api_key_file(self) -> Path:
        return self.home / "api-key"

    @property
    def upload_key_file(self) -> Path:
        """The key that signs template upload links (they work across restarts)."""
        return self.home / "template-upload-key"

    @property
    def registry(self) -> Path:
        return self.home / "registry.sqlite3"

    @property
    def pid_file(self) -> Path:
        return self.home / "server.pid"

    @property
    def port_file(self) -> Path:
        return self.home / "server.port"

    @property
    def lock_file(self) -> Path:
        """Held (flock) by the one server of this data directory for its lifetime."""
        return self.home / "server.lock"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def rootfs(self) -> Path:
        """Built root filesystems; a shared cache serves several data directories."""
        return self.rootfs_cache if self.rootfs_cache is not None else self.home / "rootfs"

    @property
    def tls(self) -> Path:
        """Domain mode's certificate authority and server certificate."""
        return self.home / "tls"

    @property
    def egress_ca(self) -> Path:
        """The egress proxy's certificate authority, which every sandbox trusts (its key stays here)."""
        return self.home / "egress-ca"

    @property
    def sandboxes(self) -> Path:
        return self.home / "sandboxes"

    @property
    def snapshots(self) -> Path:
        return self.home / "snapshots"

    @property
    def volumes(self) -> Path:
        return self.home / "volumes"

    @property
    def secret_key_file(self) -> Path:
        """The key secrets' values are encrypted with in the registry."""
        return self.home / "secrets.key"

    def secrets(self) -> list[Path]:
        """Files of the data directory that hold keys or tokens (or may log them)."""
        registry = str(self.registry)
        return [self.api_key_file, self.upload_key_file, self.secret_key_file, self.registry,
                *(Path(registry + s) for s in ("-wal", "-shm", "-journal")), self.log_file]

    def secure(self) -> None:
        """Create the data directory private to its owner (0700), and make every secret in it 0600.

        Applied on every start, so that a directory left readable by an older version is tightened.
        """
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        for path in self.secrets():
            try:
                # Through a descriptor opened without following links: a link's target is left alone.
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:  # absent (or a link)
                continue
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)


def load_or_create_api_key(paths: Paths) -> str:
    """Return the server's API key, generating it (mode 0600) on first use."""
    paths.secure()
    try:
        return paths.api_key_file.read_text().strip()
    except FileNotFoundError:
        pass
    key = "e2b_" + secrets.token_hex(API_KEY_HEX_DIGITS // 2)
    fd = os.open(paths.api_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


@dataclass(frozen=True)
class Settings:
    """Everything e2b-local can be configured with (`E2B_LOCAL_*`), validated."""

    home: Path
    port: int = DEFAULT_PORT
    rootfs: Path | None = None
    cpu_count: int = DEFAULT_CPU_COUNT
    memory_mb: int = DEFAULT_MEMORY_MB
    disk_mb: int = DEFAULT_DISK_MB
    volume_mb: int = DEFAULT_VOLUME_MB
    max_pids: int = DEFAULT_MAX_PIDS
    pool_size: int = DEFAULT_POOL_SIZE
    pool_max: int = DEFAULT_POOL_MAX
    template_pool: int = DEFAULT_TEMPLATE_POOL
    boot_concurrency: int = field(default_factory=default_boot_concurrency)
    log_requests: bool = False
    agent_start: str = DEFAULT_AGENT_START
    merge_pages: bool = False
    build_concurrency: int = DEFAULT_BUILD_CONCURRENCY
    ready_timeout: int = DEFAULT_READY_TIMEOUT
    pull_timeout: int = DEFAULT_PULL_TIMEOUT
    domain: str = DEFAULT_DOMAIN
    # 0: no HTTPS listener (no domain mode).
    https_port: int = DEFAULT_HTTPS_PORT

    @property
    def sdk_domain(self) -> str:
        """`E2B_DOMAIN` as the SDK needs it: the domain, with the HTTPS port unless it is 443."""
        return self.domain if self.https_port == 443 else f"{self.domain}:{self.https_port}"

    @property
    def paths(self) -> Paths:
        return Paths(self.home, self.rootfs)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every `E2B_LOCAL_*` setting; `SettingsError` names the first bad one.

        An empty variable counts as unset.
        """
        env = os.environ if environ is None else environ

        def value(name: str) -> str | None:
            return env.get(name) or None

        def number(name: str, default: int, check: Callable[[int], bool], what: str) -> int:
            raw = value(name)
            if raw is None:
                return default
            try:
                parsed = int(raw.strip())
            except ValueError:
                parsed = None
            if parsed is None or not check(parsed):
                raise SettingsError(f"{name} must be {what}, got {raw!r}")
            return parsed

        positive = "a positive integer"
        return cls(
            home=_home(value("E2B_LOCAL_HOME"), value("XDG_DATA_HOME")),
            port=number("E2B_LOCAL_PORT", DEFAULT_PORT, lambda p: 1 <= p <= 65535, "a port number (1-65535)"),
            rootfs=Path(raw).expanduser().resolve() if (raw := value("E2B_LOCAL_ROOTFS")) else None,
            cpu_count=number("E2B_LOCAL_CPU_COUNT", DEFAULT_CPU_COUNT, lambda n: n >= 1, positive),
            memory_mb=number("E2B_LOCAL_MEMORY_MB", DEFAULT_MEMORY_MB, lambda n: n >= 1, positive),
            disk_mb=number("E2B_LOCAL_DISK_MB", DEFAULT_DISK_MB, lambda n: n >= 1, positive),
            volume_mb=number("E2B_LOCAL_VOLUME_MB", DEFAULT_VOLUME_MB, lambda n: n >= 16, "an integer of at least 16"),
            max_pids=number("E2B_LOCAL_MAX_PIDS", DEFAULT_MAX_PIDS, lambda n: n >= 1, positive),
            pool_size=number("E2B_LOCAL_POOL_SIZE", DEFAULT_POOL_SIZE, lambda n: n >= 0, "a non-negative integer"),
            pool_max=number("E2B_LOCAL_POOL_MAX", DEFAULT_POOL_MAX, lambda n: n >= 0, "a non-negative integer"),
            template_pool=number("E2B_LOCAL_TEMPLATE_POOL", DEFAULT_TEMPLATE_POOL, lambda n: n >= 0,
                                 "a non-negative integer"),
            boot_concurrency=number("E2B_LOCAL_BOOT_CONCURRENCY", default_boot_concurrency(), lambda n: n >= 1,
                                    positive),
            log_requests=bool(number("E2B_LOCAL_LOG_REQUESTS", 0, lambda n: n in (0, 1), "0 or 1")),
            agent_start=_choice("E2B_LOCAL_AGENT_START", value("E2B_LOCAL_AGENT_START"), AGENT_STARTS,
                                DEFAULT_AGENT_START),
            merge_pages=bool(number("E2B_LOCAL_MERGE_PAGES", 0, lambda n: n in (0, 1), "0 or 1")),
            build_concurrency=number("E2B_LOCAL_BUILD_CONCURRENCY", DEFAULT_BUILD_CONCURRENCY, lambda n: n >= 1,
                                     positive),
            ready_timeout=number("E2B_LOCAL_READY_TIMEOUT", DEFAULT_READY_TIMEOUT, lambda n: n >= 1, positive),
            pull_timeout=number("E2B_LOCAL_PULL_TIMEOUT", DEFAULT_PULL_TIMEOUT, lambda n: n >= 1, positive),
            domain=_domain(value("E2B_LOCAL_DOMAIN")),
            https_port=number("E2B_LOCAL_HTTPS_PORT", DEFAULT_HTTPS_PORT, lambda p: 0 <= p <= 65535,
                              "a port number (1-65535), or 0 for no HTTPS listener"),
        )


# The root-run server's data directory: one per machine, whoever's $HOME the command runs with.
SYSTEM_HOME = Path("/var/lib/e2b-local")


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """The data directory the CLI uses for `environ` (the process's environment by default)."""
    env = os.environ if environ is None else environ
    return _home(env.get("E2B_LOCAL_HOME") or None, env.get("XDG_DATA_HOME") or None)


def _home(home: str | None, xdg_data_home: str | None, root: bool | None = None,
          system_home: Path = SYSTEM_HOME) -> Path:
    """The data directory: `E2B_LOCAL_HOME`; else, for root, /var/lib/e2b-local; else `$XDG_DATA_HOME/e2b-local`.

    A root user's per-home directory (`~/.local/share/e2b-local`) that holds a key is still used while
    the system one holds none, so that an existing installation keeps its sandboxes and key (the
    system directory exists on any machine that ran a server: it also holds the host-wide id-range claims).
    """
    if home:
        return Path(home).expanduser().resolve()
    xdg = Path(xdg_data_home or str(Path.home() / ".local" / "share")).expanduser().resolve() / "e2b-local"
    if not (os.geteuid() == 0 if root is None else root):
        return xdg
    if not (system_home / "api-key").exists() and (xdg / "api-key").exists():
        return xdg
    return system_home


def _choice(name: str, raw: str | None, choices: tuple[str, ...], default: str) -> str:
    if raw is None:
        return default
    if raw.strip() not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw.strip()


def _domain(raw: str | None) -> str:
    """`E2B_LOCAL_DOMAIN`: a DNS name of two labels or more, without a port (that is E2B_LOCAL_HTTPS_PORT)."""
    if raw is None:
        return DEFAULT_DOMAIN
    domain = raw.strip().lower().rstrip(".")
    labels = domain.split(".")
    if len(labels) < 2 or len(domain) > 200 or not all(DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise SettingsError(f"E2B_LOCAL_DOMAIN must be a domain name such as {DEFAULT_DOMAIN}, got {raw!r}")
    return domain
