"""Where e2b-local keeps its state, which port it listens on, and its API key."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

# 49980 sits just below envd's 49983 and the code interpreter's 49999, so the three read as a family.
DEFAULT_PORT = 49980
# The SDK (2.24 to 2.60) rejects keys that do not look like E2B's: "e2b_" and 40 hex digits.
API_KEY_HEX_DIGITS = 40


def default_home() -> Path:
    """The data directory: `E2B_LOCAL_HOME`, else `$XDG_DATA_HOME/e2b-local`, else ~/.local/share/e2b-local."""
    if home := os.environ.get("E2B_LOCAL_HOME"):
        return Path(home).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser().resolve() / "e2b-local"


def default_port() -> int:
    """The listening port: `E2B_LOCAL_PORT`, else 49980."""
    return int(os.environ.get("E2B_LOCAL_PORT") or DEFAULT_PORT)


@dataclass(frozen=True)
class Paths:
    """The layout of the data directory."""

    home: Path

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
        """Built root filesystems; `E2B_LOCAL_ROOTFS` shares one cache between several data directories."""
        if cache := os.environ.get("E2B_LOCAL_ROOTFS"):
            return Path(cache).expanduser().resolve()
        return self.home / "rootfs"

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
