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
# Enough for any ordinary workload, and a ceiling for fork bombs.
DEFAULT_MAX_PIDS = 1024
# Pre-started sandboxes kept per template, so that create returns at once.
DEFAULT_POOL_SIZE = 1
# Domain mode: `*.localhost` resolves to loopback (libnss-myhostname), and the HTTPS port sits beside 49980.
DEFAULT_DOMAIN = "e2b.localhost"
DEFAULT_HTTPS_PORT = 49443
DOMAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def default_boot_concurrency() -> int:
    """Boots at once: a boot spends about half its time waiting, so three per core keep the cores busy."""
    return 3 * (os.cpu_count() or 2)


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
    def registry(self) -> Path:
        return self.home / "registry.sqlite3"

    @property
    def pid_file(self) -> Path:
        return self.home / "server.pid"

    @property
    def port_file(self) -> Path:
        return self.home / "server.port"

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
    def sandboxes(self) -> Path:
        return self.home / "sandboxes"

    @property
    def snapshots(self) -> Path:
        return self.home / "snapshots"

    def secrets(self) -> list[Path]:
        """Files of the data directory that hold keys or tokens (or may log them)."""
        registry = str(self.registry)
        return [self.api_key_file, self.registry, *(Path(registry + s) for s in ("-wal", "-shm", "-journal")),
                self.log_file]

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
    max_pids: int = DEFAULT_MAX_PIDS
    pool_size: int = DEFAULT_POOL_SIZE
    boot_concurrency: int = field(default_factory=default_boot_concurrency)
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
            max_pids=number("E2B_LOCAL_MAX_PIDS", DEFAULT_MAX_PIDS, lambda n: n >= 1, positive),
            pool_size=number("E2B_LOCAL_POOL_SIZE", DEFAULT_POOL_SIZE, lambda n: n >= 0, "a non-negative integer"),
            boot_concurrency=number("E2B_LOCAL_BOOT_CONCURRENCY", default_boot_concurrency(), lambda n: n >= 1,
                                    positive),
            domain=_domain(value("E2B_LOCAL_DOMAIN")),
            https_port=number("E2B_LOCAL_HTTPS_PORT", DEFAULT_HTTPS_PORT, lambda p: 0 <= p <= 65535,
                              "a port number (1-65535), or 0 for no HTTPS listener"),
        )


def _home(home: str | None, xdg_data_home: str | None) -> Path:
    """The data directory: `E2B_LOCAL_HOME`, else `$XDG_DATA_HOME/e2b-local`, else ~/.local/share/e2b-local."""
    if home:
        return Path(home).expanduser().resolve()
    xdg = xdg_data_home or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser().resolve() / "e2b-local"


def _domain(raw: str | None) -> str:
    """`E2B_LOCAL_DOMAIN`: a DNS name of two labels or more, without a port (that is E2B_LOCAL_HTTPS_PORT)."""
    if raw is None:
        return DEFAULT_DOMAIN
    domain = raw.strip().lower().rstrip(".")
    labels = domain.split(".")
    if len(labels) < 2 or len(domain) > 200 or not all(DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise SettingsError(f"E2B_LOCAL_DOMAIN must be a domain name such as {DEFAULT_DOMAIN}, got {raw!r}")
    return domain
