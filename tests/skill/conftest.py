"""Fixtures for the offline tests of the skill (SKILL.md, references/, scripts/, packaging)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "scripts"

# The scripts import their shared helper as a top-level module, as they do when run directly.
if str(SCRIPTS_DIR) not in sys.path:
    sys.path.insert(0, str(SCRIPTS_DIR))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No E2B settings in the environment and a working directory without a .env file.

    The scripts' helper writes the chosen backend into os.environ, so the whole environment is
    restored afterwards.
    """
    saved = dict(os.environ)
    for key in ("E2B_API_KEY", "E2B_API_URL", "E2B_SANDBOX_URL", "E2B_DOMAIN", "E2B_DEBUG", "E2B_LOCAL_HOME"):
        os.environ.pop(key, None)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    try:
        yield work
    finally:
        os.environ.clear()
        os.environ.update(saved)
