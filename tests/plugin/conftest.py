"""Fixtures of the plugin's tests: pytester, and an e2b-local started through its CLI as a user would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOTFS_CACHE = os.environ.get("E2B_LOCAL_ROOTFS", "/var/tmp/e2b-local-rootfs")


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `e2b-local` from this interpreter."""
    return subprocess.run([sys.executable, "-m", "e2b_local", *args], env=env, capture_output=True, text=True,
                          timeout=900, check=False)


@dataclass(frozen=True)
class CliServer:
    """An e2b-local started with `e2b-local start` in a data directory of its own."""

    home: Path
    env: dict[str, str]  # the environment that names its data directory
    sdk_env: dict[str, str]  # what `e2b-local env --json` prints

    @property
    def sdk(self) -> dict[str, str]:
        """SDK keyword arguments that address this server."""
        return {"api_key": self.sdk_env["E2B_API_KEY"], "api_url": self.sdk_env["E2B_API_URL"],
                "sandbox_url": self.sdk_env["E2B_SANDBOX_URL"]}

    def pid(self) -> int | None:
        """The running server's pid (None when it is not running)."""
        status = cli(["status"], self.env)
        return json.loads(status.stdout)["pid"] if status.returncode == 0 else None


@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    """An e2b-local that was running before the suite under test starts."""
    from e2b import Sandbox

    home = tmp_path_factory.mktemp("e2b-home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "E2B_LOCAL_HOME": str(home), "E2B_LOCAL_ROOTFS": ROOTFS_CACHE, "E2B_LOCAL_PORT": str(port)}
    started = cli(["start"], env)
    assert started.returncode == 0, started.stderr
    server = CliServer(home, env, json.loads(cli(["env", "--json"], env).stdout))
    try:
        yield server
    finally:
        for info in Sandbox.list(**server.sdk).next_items():
            Sandbox.kill(info.sandbox_id, **server.sdk)
        cli(["stop"], env)


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SDK settings and no data directory from the outer environment; the shared root filesystems."""
    for key in ("E2B_API_KEY", "E2B_API_URL", "E2B_SANDBOX_URL", "E2B_DOMAIN", "E2B_LOCAL_HOME", "E2B_LOCAL_PORT",
                "XDG_DATA_HOME", "E2B_PYTEST_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("E2B_LOCAL_ROOTFS", ROOTFS_CACHE)
