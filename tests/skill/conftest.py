"""Fixtures for the offline tests of the skill (SKILL.md, references/, scripts/, packaging)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOTFS_CACHE

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "scripts"

# The scripts import their shared helper as a top-level module, as they do when run directly.
if str(SCRIPTS_DIR) not in sys.path:
    sys.path.insert(0, str(SCRIPTS_DIR))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No E2B settings but the shared root filesystems, and a working directory without a .env file.

    The variables are removed through `monkeypatch`, so that a test's own `monkeypatch.setenv` of one
    of them is undone before they come back. The scripts' helper also writes the backend it chose into
    os.environ; that is undone here, before `monkeypatch` restores what it changed.
    """
    for key in [k for k in os.environ if k.startswith("E2B_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("E2B_LOCAL_ROOTFS", ROOTFS_CACHE)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cleaned = dict(os.environ)
    try:
        yield work
    finally:
        os.environ.clear()
        os.environ.update(cleaned)
