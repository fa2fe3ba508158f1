"""Find the code blocks of the skill's markdown files.

A ```python block is a complete program that runs against e2b-local, unless the line directly above
its opening fence is `<!-- cloud-only -->`: such a block needs E2B cloud (MCP gateway, template
builds, volumes, secrets, public URLs, the events API) and is only compiled and checked against the
SDK's signatures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SKILL_MD = REPO_ROOT / "SKILL.md"
REFERENCES = REPO_ROOT / "references"
SCRIPTS = REPO_ROOT / "scripts"

CLOUD_ONLY_MARKER = "<!-- cloud-only -->"
FENCE_OPEN = re.compile(r"^```(\w*)\s*$")
FENCE_CLOSE = "```"


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    cloud_only: bool

    @property
    def id(self) -> str:
        """A short, stable name for test ids: file name and line."""
        return f"{self.path.name}:{self.line}"


def reference_files() -> list[Path]:
    """Every markdown file in references/, sorted."""
    return sorted(REFERENCES.glob("*.md"))


def iter_blocks(path: Path) -> list[Block]:
    """All fenced blocks of one markdown file, with their cloud-only flag."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE_OPEN.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != FENCE_CLOSE:
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path.name}:{start + 1}: code block is never closed")
        cloud_only = start > 0 and lines[start - 1].strip() == CLOUD_ONLY_MARKER
        blocks.append(Block(path, start + 1, match.group(1), "\n".join(body) + "\n", cloud_only))
        i += 1
    return blocks


def python_blocks(paths: Iterable[Path] | None = None) -> list[Block]:
    """Every ```python block of the given files (default: every reference)."""
    found: list[Block] = []
    for path in paths if paths is not None else reference_files():
        found.extend(b for b in iter_blocks(path) if b.language == "python")
    return found


def runnable_python_blocks() -> list[Block]:
    """The reference snippets a test runs against e2b-local."""
    return [b for b in python_blocks() if not b.cloud_only]


def cloud_only_python_blocks() -> list[Block]:
    """The reference snippets that need E2B cloud: compiled and signature-checked only."""
    return [b for b in python_blocks() if b.cloud_only]
