"""The skill's scripts tell a Python without e2b-local's packages from e2b-local not being installed."""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import sandbox_backend as sb  # noqa: E402

REPO = str(SCRIPTS.parent)


def test_a_missing_dependency_is_not_a_missing_e2b_local() -> None:
    stderr = "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'uvicorn'\n"
    error = sb._not_installed_error(sb._missing_module(stderr))
    assert "lacks the package 'uvicorn'" in error.message and "not installed" not in error.message
    assert f"pip install -e {REPO}" in (error.fix or "")


def test_a_missing_e2b_local_names_the_repository() -> None:
    error = sb._not_installed_error(sb._missing_module("/usr/bin/python3: No module named e2b_local"))
    assert error.message == "E2B_API_KEY is not set and e2b-local is not installed"
    assert f"bash install.sh in {REPO}" in (error.fix or "")
    error = sb._not_installed_error(sb._missing_module("ModuleNotFoundError: No module named 'e2b_local.cli'"))
    assert error.message == "E2B_API_KEY is not set and e2b-local is not installed"
