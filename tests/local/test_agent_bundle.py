"""The agent's bundle: the sandbox side of e2b_local compiled once per sources and base layer."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import ROOTFS_CACHE

from e2b_local.isolation.agent_bundle import PACKAGE_DIRECTORY, UNUSED_DAYS, AgentBundles, copy_sandbox_side
from e2b_local.isolation.rootfs import RootfsStore


def test_a_bundle_is_made_once_per_sources_and_stale_ones_are_pruned(tmp_path: Path) -> None:
    base = RootfsStore(Path(ROOTFS_CACHE)).ensure_base()
    package = copy_sandbox_side(PACKAGE_DIRECTORY, tmp_path / "src" / "e2b_local")
    cache = tmp_path / "cache"

    first = AgentBundles(cache, package).path(base)
    assert list((first / "agent" / "__pycache__").glob("app.cpython-*.pyc"))
    assert (first / "agent" / "sudo_shim.py").stat().st_mode & 0o111
    assert not (first / "control").exists() and not (first / "cli.py").exists()
    made = (first / "agent" / "app.py").stat().st_mtime_ns
    # Another server on the same sources uses the same bundle as it is.
    assert AgentBundles(cache, package).path(base) == first
    assert (first / "agent" / "app.py").stat().st_mtime_ns == made

    app = package / "agent" / "app.py"
    app.write_text(app.read_text() + "\n# changed\n")
    second = AgentBundles(cache, package).path(base)
    assert second != first
    assert "# changed" in (second / "agent" / "app.py").read_text()
    # Recently used: kept for the sandboxes that may still run on it.
    assert first.is_dir()

    unused = time.time() - UNUSED_DAYS * 86400 - 60
    os.utime(first.parent, (unused, unused))
    app.write_text(app.read_text() + "\n# changed again\n")
    third = AgentBundles(cache, package).path(base)
    assert not first.parent.exists()
    assert second.is_dir() and third.is_dir()
    assert sorted(p.name for p in cache.iterdir()) == sorted([second.parent.name, third.parent.name])
