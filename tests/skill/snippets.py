"""Find the code blocks of the skill's markdown files.

A ```python block is a complete program that runs against e2b-local. Markers, HTML comments on the
lines directly above its opening fence, say how:

- `<!-- cloud-only -->`: the block needs credentials or services beyond this machine (an outside API
  key, a Docker Hub image, a host on the internet, a catalogue server e2b-local cannot install). It is
  only compiled and checked against the SDK's signatures.
- `<!-- domain-mode -->`: the block runs with the environment `e2b-local env --domain` exports
  (E2B_DOMAIN and the trust settings for the server's authority, no URL variables), as code that
  reaches a sandbox's HTTPS addresses (`get_host`, `get_mcp_url`) needs.
- `<!-- continues -->`: the block goes on from the python block before it (a template that block
  built, for example), so the two run one after the other as one test.
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
DOMAIN_MODE_MARKER = "<!-- domain-mode -->"
CONTINUES_MARKER = "<!-- continues -->"
MARKERS = (CLOUD_ONLY_MARKER, DOMAIN_MODE_MARKER, CONTINUES_MARKER)
FENCE_OPEN = re.compile(r"^```(\w*)\s*$")
FENCE_CLOSE = "```"


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    markers: frozenset[str]

    @property
    def cloud_only(self) -> bool:
        """Needs credentials or services beyond this machine: compiled and checked only."""
        return CLOUD_ONLY_MARKER in self.markers

    @property
    def domain_mode(self) -> bool:
        """Runs with domain mode's environment (E2B_DOMAIN and the trust settings)."""
        return DOMAIN_MODE_MARKER in self.markers

    @property
    def continues(self) -> bool:
        """Goes on from the python block before it in the same file."""
        return CONTINUES_MARKER in self.markers

    @property
    def id(self) -> str:
        """A short, stable name for test ids: file name and line."""
        return f"{self.path.name}:{self.line}"


def reference_files() -> list[Path]:
    """Every markdown file in references/, sorted."""
    return sorted(REFERENCES.glob("*.md"))


def iter_blocks(path: Path) -> list[Block]:
    """All fenced blocks of one markdown file, with the markers directly above each."""
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
        markers: set[str] = set()
        above = start - 1
        while above >= 0 and lines[above].strip() in MARKERS:
            markers.add(lines[above].strip())
            above -= 1
        blocks.append(Block(path, start + 1, match.group(1), "\n".join(body) + "\n", frozenset(markers)))
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
    """The reference snippets that need more than this machine: compiled and signature-checked only."""
    return [b for b in python_blocks() if b.cloud_only]


def snippet_runs(blocks: Iterable[Block]) -> list[list[Block]]:
    """The runnable blocks grouped into runs: a block and the `continues` blocks that follow it."""
    runs: list[list[Block]] = []
    previous: Block | None = None
    for block in blocks:
        if block.continues:
            if block.cloud_only or previous is None or previous.cloud_only or previous.path != block.path:
                raise ValueError(f"{block.id}: a continuing block must follow a runnable python block of its file")
            runs[-1].append(block)
        elif not block.cloud_only:
            runs.append([block])
        previous = block
    return runs
