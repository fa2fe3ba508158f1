"""SKILL.md's and quickstart.md's quick start, copied as an agent would, in a shell with no E2B settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOTFS_CACHE

from .snippets import REFERENCES, REPO_ROOT, SKILL_MD

# Bound for one shell session: an SDK import, a sandbox create, one cell, a kill.
SHELL_TIMEOUT_S = 300
# The one line that points the SDK at e2b-local.
ENV_LINE = 'e2b-local start && eval "$(e2b-local env)"'


def fenced(text: str, language: str) -> list[str]:
    """The bodies of the ```language blocks of a Markdown text, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def quick_start() -> tuple[list[str], list[str]]:
    """SKILL.md's quick-start section: its bash blocks and its python blocks."""
    section = SKILL_MD.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return fenced(section, "bash"), fenced(section, "python")


@pytest.fixture
def no_key_shell(e2b_server, tmp_path: Path):
    """Run a bash script with no E2B_* settings, the project's tools on PATH, and e2b-local's data
    directory pointing at the test server (as on a machine where e2b-local runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(E2B_LOCAL_HOME=str(e2b_server.home), E2B_LOCAL_ROOTFS=ROOTFS_CACHE)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def run(script: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=SHELL_TIMEOUT_S, check=False)

    return run


def test_the_env_line_comes_before_the_python_code() -> None:
    bash, python = quick_start()
    skill = SKILL_MD.read_text()
    assert python and any(ENV_LINE in b for b in bash)
    assert skill.index(ENV_LINE) < skill.index(python[0])
    quickstart = (REFERENCES / "quickstart.md").read_text()
    assert quickstart.index(ENV_LINE) < quickstart.index("## Run code")


def test_the_python_quick_start_fails_without_the_line(no_key_shell, tmp_path: Path) -> None:
    _, python = quick_start()
    (tmp_path / "quick.py").write_text(python[0])
    result = no_key_shell("python quick.py")
    assert result.returncode != 0 and "API key is required" in result.stderr


def test_the_python_quick_start_runs_after_the_line(no_key_shell, tmp_path: Path) -> None:
    bash, python = quick_start()
    line = next(b for b in bash if ENV_LINE in b)
    (tmp_path / "quick.py").write_text(python[0])
    result = no_key_shell(f"set -e\n{line}\npython quick.py")
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout and "None" in result.stdout and "3.1" in result.stdout


def test_the_script_quick_start_runs(no_key_shell) -> None:
    bash, _ = quick_start()
    lines = [line for line in bash[0].splitlines() if line.strip() and not line.startswith("pip install")]
    result = no_key_shell("set -e\n" + "\n".join(lines), cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert '"stdout": "42\\n"' in result.stdout and "e2b-local" in result.stderr
