"""A test host on this machine that is not this host: an HTTP server in a network namespace of its own.

Sandboxes may not reach the host's own addresses, so tests that need a reachable target beside the
internet use this: a veth pair joins a fresh namespace to the host, and the server listens on the
namespace's side only.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

# A /30 per test host, from a range this machine does not otherwise use.
SUBNET_PREFIX = "10.213"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def namespaced_host(port: int = 8000, server_args: list[str] | None = None) -> Iterator[str]:
    """Yield `address:port` of an HTTP server (Python's http.server) on a namespaced test host.

    `server_args`: another Python program to run there instead (`{address}` and `{port}` in them are
    replaced); it must answer HTTP GET on that port.
    """
    name = "e2bt" + secrets.token_hex(3)
    third = secrets.randbelow(250) + 1
    host_side, peer_side = f"{SUBNET_PREFIX}.{third}.1", f"{SUBNET_PREFIX}.{third}.2"
    _ip("netns", "add", name)
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("link", "add", name + "a", "type", "veth", "peer", "name", name + "b", "netns", name)
        _ip("addr", "add", host_side + "/30", "dev", name + "a")
        _ip("link", "set", name + "a", "up")
        _ip("-n", name, "addr", "add", peer_side + "/30", "dev", name + "b")
        _ip("-n", name, "link", "set", name + "b", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        args = ["-m", "http.server", str(port), "--bind", peer_side] if server_args is None else [
            a.replace("{address}", peer_side).replace("{port}", str(port)) for a in server_args]
        server = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, *args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = f"{peer_side}:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://{target}/", timeout=1, trust_env=False)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the test host's HTTP server did not start") from None
                time.sleep(0.1)
        yield target
    finally:
        if server is not None:
            server.kill()
            server.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", name + "a")
        _ip("netns", "del", name)
