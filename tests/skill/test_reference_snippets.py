"""Docs are code: every runnable ```python block of references/ runs against e2b-local and succeeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from skill.snippets import SKILL_MD, Block, python_blocks, snippet_runs

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


RUNS = snippet_runs(python_blocks()) + snippet_runs(python_blocks([SKILL_MD]))


@pytest.fixture(scope="module")
def snippet_env(e2b_server) -> dict[str, str]:
    """What `eval "$(e2b-local env)"` leaves a user's shell with, and the data directory."""
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env.update(e2b_server.env, E2B_LOCAL_HOME=str(e2b_server.home))
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@pytest.fixture(scope="module")
def domain_env(e2b_server, snippet_env: dict[str, str]) -> dict[str, str]:
    """The same after `eval "$(e2b-local env --domain)"` instead: E2B_DOMAIN and the trust settings."""
    env = {k: v for k, v in snippet_env.items() if k not in e2b_server.env}
    printed = subprocess.run([sys.executable, "-m", "e2b_local", "env", "--domain", "--json"], check=True,
                             env={**env, "E2B_LOCAL_HTTPS_PORT": str(e2b_server.https_port)},
                             capture_output=True, text=True)
    env.update(json.loads(printed.stdout))
    return env


@pytest.fixture
def templates_left_behind(e2b_server) -> Iterator[None]:
    """Deletes the templates a run built, so that the next run builds them again under the same names."""

    def template_ids() -> set[str]:
        listed = httpx.get(e2b_server.url + "/templates", headers={"X-API-Key": e2b_server.api_key}, timeout=30)
        listed.raise_for_status()
        return {t["templateID"] for t in listed.json()}

    before = template_ids()
    yield
    for template_id in template_ids() - before:
        httpx.delete(f"{e2b_server.url}/templates/{template_id}", headers={"X-API-Key": e2b_server.api_key},
                     timeout=60).raise_for_status()


@pytest.mark.parametrize("run", RUNS, ids=lambda run: "+".join([run[0].id, *(str(b.line) for b in run[1:])]))
def test_snippet_runs(run: list[Block], snippet_env: dict[str, str], domain_env: dict[str, str],
                      templates_left_behind: None, tmp_path: Path) -> None:
    for block in run:
        script = tmp_path / "snippet.py"
        script.write_text(block.code)
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(script)], cwd=tmp_path,
                              env=domain_env if block.domain_mode else snippet_env,
                              capture_output=True, text=True, timeout=SNIPPET_TIMEOUT)
        assert proc.returncode == 0, f"{block.id} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
