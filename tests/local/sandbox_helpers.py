"""Helpers of the sandbox tests: commands whose failure is data, and what the server recorded."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox, TimeoutException


def run_as(sandbox: Sandbox, command: str, user: str = "root", timeout: float = 120) -> tuple[int, str]:
    """Run a command inside the sandbox as `user`; (exit code, stdout + stderr), failures included."""
    try:
        result = sandbox.commands.run(command, user=user, timeout=timeout)
        return result.exit_code, result.stdout + result.stderr
    except CommandExitException as exc:
        return exc.exit_code, exc.stdout + exc.stderr


def registry_key(home: Path, sandbox_id: str) -> str:
    """The key (directory and cgroup name) the server with data directory `home` recorded for a sandbox."""
    with sqlite3.connect(home / "registry.sqlite3") as db:
        (record,) = db.execute("SELECT record FROM sandboxes WHERE sandbox_id = ?", (sandbox_id,)).fetchone()
    return str(json.loads(record)["key"])


def registered_keys(home: Path) -> set[str]:
    """The keys of every sandbox the server with data directory `home` has created (the other directories
    in its `sandboxes` are pre-started ones)."""
    with sqlite3.connect(home / "registry.sqlite3") as db:
        return {str(json.loads(record)["key"]) for (record,) in db.execute("SELECT record FROM sandboxes")}


def kill_during_a_long_cell(sandbox: object) -> None:
    """Kill a code-interpreter sandbox while its run_code streams; the SDK must report it killed."""
    started = threading.Event()
    killer = threading.Thread(target=lambda: started.wait(60) and sandbox.kill())  # type: ignore[attr-defined]
    killer.start()
    try:
        with pytest.raises(TimeoutException, match="killed while the request was in progress"):
            sandbox.run_code("print('started', flush=True)\nimport time\ntime.sleep(60)",  # type: ignore[attr-defined]
                             on_stdout=lambda _msg: started.set(), timeout=90)
    finally:
        killer.join()
