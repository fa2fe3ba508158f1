"""The scripts as command-line programs: help, usage errors, backend errors, exit codes.

Nothing here reaches a sandbox: usage errors are caught before a backend is chosen, and backend
errors are provoked with an address nothing listens on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .snippets import REPO_ROOT, SCRIPTS
from .test_snippets_static import find_ruff

SCRIPT_NAMES = ["run_code.py", "lifecycle.py", "metrics.py", "files.py", "commands.py"]
SUBCOMMANDS = {
    "lifecycle.py": ["create", "list", "info", "connect", "resume", "pause", "set-timeout", "kill"],
    "files.py": ["upload", "download", "list", "read", "write", "watch"],
    "commands.py": ["run", "background", "list", "kill", "send-stdin"],
}
# Help texts are module constants too, but they explain themselves.
HELP_TEXT_CONSTANTS = {"EPILOG", "EXIT_CODES_HELP", "TABLE_HEADER"}
# A port nothing listens on: connections are refused at once.
CLOSED_URL = "http://127.0.0.1:1"
# Generous bound for one script run that fails fast (imports the SDK, one refused connection).
RUN_TIMEOUT_S = 60


def run_script(name: str, *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        input=stdin,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def script_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment without E2B settings and a clean cwd.

    Every test here fails before a backend is chosen, or chooses E2B cloud explicitly; finding and
    starting e2b-local is tested against the real server in tests/skill/test_backend_selection.py.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env["E2B_LOCAL_HOME"] = str(tmp_path / "e2b-local-home")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return env, cwd


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_help_shows_examples_and_exit_codes(name: str, script_env) -> None:
    env, cwd = script_env
    result = run_script(name, "--help", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout
    assert f"python scripts/{name}" in result.stdout
    assert "exit codes:" in result.stdout
    assert "--local" in result.stdout and "--cloud" in result.stdout


@pytest.mark.parametrize(("name", "sub"), [(n, s) for n, subs in SUBCOMMANDS.items() for s in subs])
def test_subcommand_help(name: str, sub: str, script_env) -> None:
    env, cwd = script_env
    result = run_script(name, sub, "--help", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize(
    ("name", "args", "stdin", "needle"),
    [
        ("run_code.py", [], "", "the code is empty"),
        ("run_code.py", ["--code", "1", "--env", "NOEQUALS"], None, "KEY=VALUE"),
        ("run_code.py", ["--code", "1", "--upload", "missing.csv:/home/user/x.csv"], None, "does not exist"),
        ("run_code.py", ["--code", "1", "--download", "nocolon"], None, "REMOTE:LOCAL"),
        ("run_code.py", ["--file", "missing.py"], None, "cannot read --file"),
        ("run_code.py", ["--code", "1", "--sandbox-id", "x", "--template", "base"], None, "--template"),
        ("lifecycle.py", ["kill"], None, "kill needs sandbox IDs or --all"),
        ("lifecycle.py", ["kill", "--all", "--state", "paused"], None, "--metadata KEY=VALUE"),
        ("lifecycle.py", ["create", "--auto-resume"], None, "--on-timeout pause"),
        ("lifecycle.py", ["list", "--limit", "0"], None, "--limit"),
        ("metrics.py", ["sbx", "--watch", "0"], None, "--watch"),
        ("files.py", ["upload", "sbx", "missing.txt", "/home/user/x"], None, "does not exist"),
        ("files.py", ["list", "sbx", "/", "--depth", "0"], None, "--depth"),
        ("commands.py", ["run", "  "], None, "the command is empty"),
    ],
)
def test_usage_errors_exit_2_with_a_fix_and_no_traceback(name, args, stdin, needle, script_env) -> None:
    env, cwd = script_env
    result = run_script(name, *args, env=env, cwd=cwd, stdin=stdin)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "error:" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_argparse_errors_exit_2(script_env) -> None:
    env, cwd = script_env
    result = run_script("lifecycle.py", "set-timeout", "only-an-id", env=env, cwd=cwd)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_cloud_flag_without_key_exits_3(script_env) -> None:
    env, cwd = script_env
    result = run_script("lifecycle.py", "--cloud", "list", env=env, cwd=cwd)
    assert result.returncode == 3
    assert "error:" in result.stderr and "fix:" in result.stderr and "E2B_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_api_from_dotenv_exits_3(script_env) -> None:
    pytest.importorskip("dotenv")
    env, cwd = script_env
    (cwd / ".env").write_text(f"E2B_API_KEY=e2b_{'4' * 40}\nE2B_API_URL={CLOSED_URL}\nE2B_SANDBOX_URL={CLOSED_URL}\n")
    result = run_script("lifecycle.py", "list", env=env, cwd=cwd)
    assert result.returncode == 3, result.stderr
    assert f"backend: E2B API at {CLOSED_URL} (from E2B_API_URL)" in result.stderr
    assert "cannot reach the E2B API" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_debug_variable_shows_the_traceback(script_env) -> None:
    env, cwd = script_env
    cloud = {**env, "E2B_API_KEY": "e2b_" + "5" * 40, "E2B_API_URL": CLOSED_URL, "E2B_SANDBOX_URL": CLOSED_URL}
    quiet = run_script("lifecycle.py", "info", "x", env=cloud, cwd=cwd)
    loud = run_script("lifecycle.py", "info", "x", env={**cloud, "E2B_SCRIPTS_DEBUG": "1"}, cwd=cwd)
    assert quiet.returncode == loud.returncode == 3
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr


def test_the_whole_project_is_ruff_clean() -> None:
    ruff = find_ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    result = subprocess.run([ruff, "check", str(REPO_ROOT)], capture_output=True, text=True, cwd=REPO_ROOT,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_constant_in_the_scripts_says_why() -> None:
    """Module-level UPPER_CASE constants carry a comment on the line above or at the end of the line."""
    for path in sorted(SCRIPTS.glob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            name = line.split("=")[0].strip()
            if name in HELP_TEXT_CONSTANTS:
                continue
            if line and line[0].isupper() and "=" in line.split("#")[0] and name.isupper():
                above = lines[i - 1].strip() if i else ""
                documented = above.startswith("#") or "#" in line or lines[i - 1].strip().endswith(")")
                assert documented, f"{path.name}:{i + 1}: {line.strip()} needs a comment saying why"


def test_json_output_contract_is_documented_in_skill_md() -> None:
    text = (REPO_ROOT / "SKILL.md").read_text()
    for field in ("sandbox_id", "stdout", "stderr", "text", "results", "error", "execution_count", "truncated"):
        assert f"`{field}`" in text


def script_dependencies(path: Path) -> list[str]:
    """The dependencies of a script's PEP 723 inline metadata block."""
    block = re.search(r"^# /// script\n((?:#.*\n)*?)# ///$", path.read_text(), re.MULTILINE)
    assert block, f"{path.name} has no PEP 723 block"
    toml_text = "\n".join(line.removeprefix("#").removeprefix(" ") for line in block.group(1).splitlines())
    return tomllib.loads(toml_text)["dependencies"]


@pytest.mark.parametrize("name", [*SCRIPT_NAMES, "claude_agent.py", "mcp_server.py"])
def test_inline_dependencies_agree_with_pyproject(name: str) -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["agent"]
    for requirement in script_dependencies(SCRIPTS / name):
        assert requirement in declared, f"{name}: {requirement!r} is not what pyproject.toml declares"


def test_agent_packages_are_an_extra_not_runtime_dependencies() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    assert "anthropic" not in runtime and "mcp" not in runtime
    assert any(d.startswith("anthropic") for d in project["optional-dependencies"]["agent"])
    assert 'extras="[agent,test]"' in (REPO_ROOT / "install.sh").read_text()


@pytest.mark.parametrize("name", ["sandbox_backend.py", "sandbox_tools.py"])
def test_helper_modules_explain_themselves_and_do_nothing(name: str, script_env) -> None:
    env, cwd = script_env
    helped = run_script(name, "--help", env=env, cwd=cwd)
    assert helped.returncode == 0 and "helper module" in helped.stdout and "scripts/run_code.py" in helped.stdout
    bare = run_script(name, env=env, cwd=cwd)
    assert bare.returncode == 2 and bare.stdout == ""
    assert "error: this is a helper module" in bare.stderr and "fix:" in bare.stderr
