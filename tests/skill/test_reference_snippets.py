"""Docs are code: every runnable ```python block of references/ runs against e2b-local and succeeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from skill.snippets import SKILL_MD, python_blocks, runnable_python_blocks

# Generous: some snippets wait for a metrics sample (E2B samples every 5 s) or install a package.
SNIPPET_TIMEOUT = 240
REPO_ROOT = Path(__file__).resolve().parents[2]
# Runs a snippet as __main__ and, once it has finished, exits without interpreter teardown: the SDK's
# native HTTP client now and then aborts while Python finalizes (after the snippet's work is done and
# its output flushed), which says nothing about the snippet. An exception in the snippet still fails.
RUNNER = (
    "import os, runpy, sys, traceback\n"
    "status = 0\n"
    "try:\n"
    "    runpy.run_path(sys.argv[1], run_name='__main__')\n"
    "except SystemExit as stop:\n"
    "    status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)\n"
    "except BaseException:\n"
    "    traceback.print_exc()\n"
    "    status = 1\n"
    "sys.stdout.flush(); sys.stderr.flush(); os._exit(status)\n"
)


@pytest.fixture(scope="module")
def snippet_env(e2b_server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env.update(e2b_server.env, E2B_LOCAL_HOME=str(e2b_server.home))
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@pytest.mark.parametrize("block", runnable_python_blocks() + [b for b in python_blocks([SKILL_MD])
                                                                 if not b.cloud_only], ids=lambda b: b.id)
def test_snippet_runs(block, snippet_env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(block.code)
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(script)], cwd=tmp_path, env=snippet_env,
                          capture_output=True, text=True, timeout=SNIPPET_TIMEOUT)
    assert proc.returncode == 0, f"{block.id} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
