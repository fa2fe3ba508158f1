"""Start and stop a private e2b-local server for a benchmark run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from e2b_local.settings import Settings

# A cold root filesystem cache is built before the server answers; that takes minutes.
START_TIMEOUT = 900.0


@contextmanager
def local_server(pool_size: int = 1, home: Path | None = None,
                 extra_env: dict[str, str] | None = None, remove: bool | None = None) -> Iterator[dict[str, str]]:
    """A server with its own data directory (sharing the root filesystem cache); yields SDK settings.

    `home` is that data directory when the caller wants to look into it; a fresh one by default.
    `extra_env` adds settings (`E2B_LOCAL_*`) to the server's environment. The data directory is
    removed once the server has stopped (`remove`; by default when it was made here), unless the run
    failed: then its server log is kept for reading.
    """
    remove = home is None if remove is None else remove
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = home or Path(tempfile.mkdtemp(prefix="e2b-bench-"))
    rootfs = os.environ.get("E2B_LOCAL_ROOTFS") or str(Settings.from_environ().paths.rootfs)
    env = {**os.environ, "E2B_LOCAL_HOME": str(home), "E2B_LOCAL_ROOTFS": rootfs,
           "E2B_LOCAL_POOL_SIZE": str(pool_size), **(extra_env or {})}
    with open(home / "bench-server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "e2b_local", "serve", "--port", str(port)],
                                stdout=log, stderr=log, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    failed = True
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"e2b-local did not start; see {home / 'bench-server.log'}")
            time.sleep(0.2)
        yield {"api_url": url, "sandbox_url": url, "api_key": (home / "api-key").read_text().strip()}
        failed = False
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if failed:
            print(f"local_server: the server's data directory is kept: {home}", file=sys.stderr)
        elif remove:
            shutil.rmtree(home, ignore_errors=True)
