"""Shared fixtures: a real e2b-local server, started once per test process, and SDK settings for it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

# The plugin's own tests (tests/plugin) run example suites through pytester.
pytest_plugins = ["pytester"]

# Root filesystems are built once per machine and shared by every test run (they take minutes).
ROOTFS_CACHE = os.environ.get("E2B_LOCAL_ROOTFS", "/var/tmp/e2b-local-rootfs")
# The JS SDK and the E2B CLI, installed here by `install.sh --test` (tests/js/package.json pins them).
JS_PROJECT = Path(__file__).parent / "js"
# The first start of a server builds the root filesystems when the cache is cold.
SERVER_START_TIMEOUT = 900.0
# Tests here drive real sandboxes; so does any test that asks for a server.
SANDBOX_TESTS = (Path(__file__).parent / "local", Path(__file__).parent / "plugin")
SERVER_FIXTURES = frozenset({"e2b_server", "sandbox"})


def run_js(source: str, env: dict[str, str], timeout: float = 180) -> object:
    """Run a CommonJS script with tests/js's pinned SDK; its last line of output, parsed as JSON.

    `env` holds the SDK's settings: none of the caller's E2B_ variables or trust settings get through
    beside it. Skips when there is no Node or no JS SDK here; fails on a non-zero exit.
    """
    if shutil.which("node") is None or not (JS_PROJECT / "node_modules/@e2b/code-interpreter").is_dir():
        pytest.skip("no JS SDK in tests/js (install.sh --test installs it with Node 20.18+)")
    own = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
    base = {k: v for k, v in os.environ.items() if not k.startswith("E2B_") and k not in own}
    # In the project folder, so that require() finds its node_modules.
    script = JS_PROJECT / f"e2b-local-test-{os.getpid()}-{time.monotonic_ns()}.cjs"
    script.write_text(source)
    try:
        out = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=timeout,
                             env={**base, **env}, cwd=JS_PROJECT)
    finally:
        script.unlink()
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs real sandboxes `sandbox`, so that `-m "not sandbox"` runs anywhere."""
    for item in items:
        in_tree = any(item.path.is_relative_to(tree) for tree in SANDBOX_TESTS)
        if in_tree or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.sandbox)


def fresh_sdk_transports() -> None:
    """Make the SDK build its HTTP transports anew, reading the trust settings (SSL_CERT_FILE) again.

    The SDK keeps one transport per process and loads the certificate store when it builds it, as a
    program started after `eval "$(e2b-local env --domain)"` does once; a test that changes the trust
    settings mid-process has to drop the transports built before.
    """
    from e2b.api import client_async, client_sync

    for module in (client_sync, client_async):
        with module._transport_lock:
            module._transports.clear()
            module._pools.clear()
            module._httpx_transports.clear()


def server_prefix(home: Path) -> str:
    """The key prefix of a server's sandbox directories and cgroups (as the fleet derives it)."""
    return "k" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:6] + "-"


def cgroup_processes(pattern: str) -> set[int]:
    """Host pids of the processes whose /proc/<pid>/cgroup matches `pattern` (a regular expression)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/cgroup").read_text()
            except OSError:
                continue
            if re.search(pattern, text, re.M):
                found.add(int(entry))
    return found


def our_cgroups(prefix: str) -> set[str]:
    """Names of the sandbox cgroups that exist now with this prefix."""
    from e2b_local.isolation.cgroups import leftover_cgroups

    return {p.name for p in leftover_cgroups() if p.name.startswith(prefix)}


@dataclass(frozen=True)
class LocalServer:
    """A running e2b-local server started by the test suite."""

    url: str
    api_key: str
    home: Path
    process: subprocess.Popen[bytes]
    https_port: int  # domain mode's listener

    @property
    def env(self) -> dict[str, str]:
        return {"E2B_API_URL": self.url, "E2B_SANDBOX_URL": self.url, "E2B_VOLUME_API_URL": self.url,
                "E2B_API_KEY": self.api_key}

    @property
    def sdk(self) -> dict[str, str]:
        """The SDK's keyword arguments that address this server (`Sandbox.create(**server.sdk)`)."""
        return {"api_key": self.api_key, "api_url": self.url, "sandbox_url": self.url}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int | None = None, env: dict[str, str] | None = None) -> LocalServer:
    """Start `e2b-local serve` with its own data directory and wait until it answers.

    `env` adds to the server's environment (settings such as `E2B_LOCAL_DISK_MB`).
    """
    port = port or _free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "E2B_LOCAL_HOME": str(home), "E2B_LOCAL_ROOTFS": ROOTFS_CACHE,
           # Each test server has a domain-mode port of its own: several run at once on one machine.
           "E2B_LOCAL_HTTPS_PORT": str(_free_port()), **(env or {})}
    https_port = int(env["E2B_LOCAL_HTTPS_PORT"])
    log = open(home / "server.log", "ab")  # noqa: SIM115 - kept open for the server's lifetime
    proc = subprocess.Popen([sys.executable, "-m", "e2b_local", "serve", "--port", str(port)],
                            stdout=log, stderr=log, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"e2b-local exited: {(home / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("e2b-local did not start in time")
    api_key = (home / "api-key").read_text().strip()
    return LocalServer(url, api_key, home, proc, https_port)


def stop_server(server: LocalServer) -> None:
    """Stop a server started by `start_server` (its sandboxes are killed first)."""
    headers = {"X-API-Key": server.api_key}
    try:
        for sandbox in httpx.get(server.url + "/v2/sandboxes", headers=headers, timeout=30).json():
            httpx.delete(f"{server.url}/sandboxes/{sandbox['sandboxID']}", headers=headers, timeout=30)
    except httpx.HTTPError:
        pass
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextlib.contextmanager
def exported(values: Mapping[str, str | None]) -> Iterator[None]:
    """`values` in os.environ (None: removed) until the block ends, then the variables as they were."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def e2b_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One e2b-local server for the whole session, with the SDK's environment pointed at it."""
    server = start_server(tmp_path_factory.mktemp("e2b-local-home"))
    try:
        with exported(server.env):
            yield server
    finally:
        stop_server(server)


@pytest.fixture
def sandbox(e2b_server: LocalServer) -> Iterator[object]:
    """A fresh `base` sandbox, killed after the test."""
    from e2b import Sandbox

    sbx = Sandbox.create()
    try:
        yield sbx
    finally:
        sbx.kill()


@pytest.fixture
def tagged(e2b_server: LocalServer) -> Iterator[tuple[str, list[object]]]:
    """Two `base` sandboxes tagged with a run of their own (metadata `cli-run`), killed after the test."""
    from e2b import Sandbox

    run = uuid.uuid4().hex[:8]
    boxes = [Sandbox.create(metadata={"cli-run": run, "n": str(i)}, **e2b_server.sdk) for i in range(2)]
    try:
        yield run, boxes
    finally:
        for box in boxes:
            Sandbox.kill(box.sandbox_id, **e2b_server.sdk)
