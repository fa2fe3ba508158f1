"""Static checks of the code in SKILL.md and references/: it compiles, binds to the installed SDK,
cleans up its sandboxes, carries the markers it needs, and avoids the known traps of older examples.

Running the snippets against e2b-local is a separate test suite; these checks need no server.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import sdk_calls
from .snippets import (
    DOMAIN_MODE_MARKER,
    MARKERS,
    SCRIPTS,
    SKILL_MD,
    Block,
    cloud_only_python_blocks,
    iter_blocks,
    python_blocks,
    reference_files,
    runnable_python_blocks,
    snippet_runs,
)

ALL_DOCS = [SKILL_MD, *reference_files()]
ALL_PYTHON = python_blocks(ALL_DOCS)

# Sandbox HTTPS addresses: on e2b-local a snippet using them runs in domain mode and carries its marker.
DOMAIN_MODE_FEATURES = {
    "get_host(": "sandbox URLs",
    "get_mcp_url": "the MCP gateway's URL",
}

# Names and forms that are wrong or removed in the pinned SDK (see the SDK errata).
FORBIDDEN_PYTHON = {
    r"\bbeta_create\b": "Sandbox.beta_create was removed; use Sandbox.create(lifecycle=...)",
    r"\bbeta_pause\b": "beta_pause() is deprecated; use pause()",
    r"\bauto_pause\s*=": "create(auto_pause=...) does not exist; use lifecycle=",
    r"\.files\.watch\(": "files.watch does not exist; use files.watch_dir",
    r"(?<!code_)\bcreate_context\(": "use create_code_context",
    r"\bkeep_memory\s*=": "keep_memory is deprecated; use mode=",
    r"\.git\.\w+\(": "sandbox.git is deprecated; run git with commands.run",
    r"claude-(?:3|[a-z]+-4-20)": "outdated model name",
    r"\bsecure\s*=": "secure= is ignored by the SDK",
}
FORBIDDEN_JS = {
    r"\bbetaCreate\b": "Sandbox.betaCreate was removed",
    r"\bbetaPause\b": "betaPause() is deprecated",
    r"\bcreateContext\(": "use createCodeContext",
}
# Sandbox classes whose `create` must be paired with a kill (or a with block) in runnable snippets.
SANDBOX_CLASS_NAMES = {"Sandbox", "AsyncSandbox"}


def find_ruff() -> str | None:
    """The ruff executable: on PATH, or next to this Python (a virtualenv's bin/)."""
    beside = Path(sys.executable).parent / "ruff"
    return shutil.which("ruff") or (str(beside) if beside.exists() else None)


def _ids(blocks: list[Block]) -> list[str]:
    return [b.id for b in blocks]


def test_there_are_snippets_of_both_kinds() -> None:
    assert len(runnable_python_blocks()) >= 40
    assert len(cloud_only_python_blocks()) >= 3
    assert any(b.domain_mode for b in runnable_python_blocks())
    assert any(len(run) > 1 for run in snippet_runs(python_blocks()))


@pytest.mark.parametrize("block", ALL_PYTHON, ids=_ids(ALL_PYTHON))
def test_python_block_compiles(block: Block) -> None:
    compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("block", ALL_PYTHON, ids=_ids(ALL_PYTHON))
def test_sdk_calls_bind_to_the_installed_sdk(block: Block) -> None:
    report = sdk_calls.check_code(block.code)
    assert not report.problems, f"{block.id}: " + "; ".join(report.problems)
    if block.cloud_only and re.search(r"^\s*(from|import) e2b", block.code, re.M):
        assert report.bound, f"{block.id}: no SDK call could be checked"


def test_the_checker_catches_known_traps() -> None:
    bad = """
from e2b import Sandbox
a = Sandbox(timeout=300)
b = Sandbox.create(auto_pause=True)
c = Sandbox.create(mcp={"github": {"githubPersonalAccessToken": "t"}})
Sandbox.list(query={"state": ["running"]})
d = Sandbox.create()
d.files.watch("/home/user")
d.commands.run("ls", timeot=5)
"""
    problems = " | ".join(sdk_calls.check_code(bad).problems)
    for needle in (
        "constructs a sandbox directly",
        "unknown options ['auto_pause']",
        "unknown settings ['githubPersonalAccessToken']",
        "needs SandboxQuery",
        "Filesystem.watch does not exist",
        "unexpected keyword argument 'timeot'",
    ):
        assert needle in problems


def test_mcp_examples_use_catalogue_names() -> None:
    catalogue = sdk_calls.mcp_catalogue()
    assert len(catalogue) > 200
    for name in ("githubOfficial", "exa", "duckduckgo", "slack"):
        assert name in catalogue


@pytest.mark.parametrize("block", runnable_python_blocks(), ids=_ids(runnable_python_blocks()))
def test_runnable_snippet_that_needs_domain_mode_is_marked(block: Block) -> None:
    for needle, feature in DOMAIN_MODE_FEATURES.items():
        if needle in block.code:
            assert block.domain_mode, f"{block.id} uses {feature}: mark it {DOMAIN_MODE_MARKER}"


@pytest.mark.parametrize("block", runnable_python_blocks(), ids=_ids(runnable_python_blocks()))
def test_runnable_snippet_cleans_up_its_sandboxes(block: Block) -> None:
    tree = ast.parse(block.code)
    managed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                expr = item.context_expr.value if isinstance(item.context_expr, ast.Await) else item.context_expr
                managed.add(id(expr))
    unmanaged = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("create", "connect", "fork")
        and (
            (isinstance(node.func.value, ast.Name) and node.func.value.id in SANDBOX_CLASS_NAMES)
            or (isinstance(node.func.value, ast.Attribute) and node.func.value.attr in SANDBOX_CLASS_NAMES)
            or node.func.attr == "fork"
        )
        and id(node) not in managed
        and not (node.func.attr == "connect" and node.args and isinstance(node.args[0], ast.Constant))
    ]
    if unmanaged:
        assert ".kill(" in block.code, f"{block.id}: a sandbox is created outside `with` and never killed"


@pytest.mark.parametrize("block", runnable_python_blocks(), ids=_ids(runnable_python_blocks()))
def test_runnable_snippet_defines_every_name(block: Block, tmp_path: Path) -> None:
    ruff = find_ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    source = tmp_path / "snippet.py"
    source.write_text(block.code)
    result = subprocess.run(
        [ruff, "check", "--isolated", "--select", "F821,F822,F823,F811", "--output-format", "concise", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{block.id}: {result.stdout}"


def test_markers_sit_directly_above_a_python_fence() -> None:
    for path in ALL_DOCS:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() in MARKERS:
                below = i + 1
                while below < len(lines) and lines[below].strip() in MARKERS:
                    below += 1
                assert below < len(lines) and lines[below].startswith("```python"), f"{path.name}:{i + 1}"
        snippet_runs(python_blocks([path]))  # a continuing block follows a runnable one


def test_skill_md_snippet_is_runnable() -> None:
    blocks = python_blocks([SKILL_MD])
    assert blocks and not any(b.cloud_only for b in blocks)


@pytest.mark.parametrize("path", ALL_DOCS, ids=lambda p: p.name)
def test_no_outdated_names_in_code_blocks(path: Path) -> None:
    for block in iter_blocks(path):
        patterns = FORBIDDEN_PYTHON if block.language == "python" else FORBIDDEN_JS if block.language == "js" else {}
        for pattern, why in patterns.items():
            assert not re.search(pattern, block.code), f"{block.id}: {why}"


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.py")), ids=lambda p: p.name)
def test_no_outdated_names_in_scripts(path: Path) -> None:
    text = path.read_text()
    for pattern, why in FORBIDDEN_PYTHON.items():
        assert not re.search(pattern, text), f"{path.name}: {why}"
    assert "Sandbox(" not in text.replace(".Sandbox(", ""), f"{path.name}: create sandboxes with Sandbox.create()"
