"""Layout of the skill: progressive disclosure, links, tables of contents, size limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .snippets import REFERENCES, REPO_ROOT, SKILL_MD, reference_files

# Exactly the references the skill documents.
EXPECTED_REFERENCES = {
    "quickstart.md",
    "sandbox-lifecycle.md",
    "code-interpreting.md",
    "filesystem.md",
    "commands.md",
    "monitoring-and-events.md",
    "persistence.md",
    "mcp-gateway.md",
    "custom-templates.md",
    "advanced-sandbox.md",
    "local-sandboxes.md",
}
# SKILL.md body limit of the skill-authoring guidance.
MAX_SKILL_LINES = 500
# Files longer than this need a table of contents near the top.
TOC_THRESHOLD = 100
# The table of contents must start within the first lines of the file.
TOC_WITHIN_LINES = 15

LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_reference_set_is_exact() -> None:
    assert {p.name for p in reference_files()} == EXPECTED_REFERENCES


def test_skill_md_is_short() -> None:
    assert len(SKILL_MD.read_text().splitlines()) < MAX_SKILL_LINES


def test_every_reference_is_linked_from_skill_md_with_when_to_read_it() -> None:
    lines = SKILL_MD.read_text().splitlines()
    for name in EXPECTED_REFERENCES:
        starts = [i for i, line in enumerate(lines) if line.startswith(f"- [references/{name}](references/{name})")]
        assert starts, f"SKILL.md has no reference bullet for {name}"
        bullet = [lines[starts[0]]]
        for line in lines[starts[0] + 1 :]:  # the bullet may wrap over indented lines
            if not line.startswith("  "):
                break
            bullet.append(line)
        assert "Read " in " ".join(bullet), f"SKILL.md does not say when to read {name}"


@pytest.mark.parametrize("path", [SKILL_MD, *reference_files()], ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    for target in LINK.findall(path.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.exists(), f"{path.name} links to missing {target}"
        if path.parent == REFERENCES:
            assert resolved.parent in (REFERENCES, REPO_ROOT), "references stay one level deep"


@pytest.mark.parametrize("path", reference_files(), ids=lambda p: p.name)
def test_table_of_contents_when_long(path: Path) -> None:
    lines = path.read_text().splitlines()
    if len(lines) <= TOC_THRESHOLD:
        return
    head = lines[:TOC_WITHIN_LINES]
    assert any(line.strip() in ("Contents", "## Contents") for line in head), f"{path.name} needs a table of contents"
    start = next(i for i, line in enumerate(lines) if line.strip() in ("Contents", "## Contents"))
    toc = []
    for line in lines[start + 1 :]:
        if not line.startswith("- "):
            break
        toc.append(line[2:].strip())
    headings = [line[3:].strip() for line in lines if line.startswith("## ") and line.strip() != "## Contents"]
    assert toc == headings, f"{path.name}: the table of contents does not match the ## headings"


@pytest.mark.parametrize("path", reference_files(), ids=lambda p: p.name)
def test_reference_starts_with_a_title_and_says_when_to_read_it(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ")
    assert any(line.startswith("Read this") for line in lines[:6]), f"{path.name}: say when to read it"


def test_python_comes_before_javascript_in_each_reference() -> None:
    for path in reference_files():
        text = path.read_text()
        first_js = text.find("```js")
        first_py = text.find("```python")
        if first_js != -1:
            assert first_py != -1 and first_py < first_js, f"{path.name}: Python first, JS where it differs"


def test_no_local_paths_or_working_notes() -> None:
    for path in [SKILL_MD, *reference_files()]:
        text = path.read_text()
        for needle in ("/work/", "/tmp/venv", "TODO", "FIXME", "XXX"):
            assert needle not in text, f"{path.name} contains {needle!r}"


# Spellings of SDK calls that do not exist, each with the attribute lookup that shows it.
MISSPELLED_CALLS = {
    "files.download_url(": ("e2b.sandbox_sync.filesystem.filesystem", "Filesystem", "download_url"),
    "files.upload_url(": ("e2b.sandbox_sync.filesystem.filesystem", "Filesystem", "upload_url"),
    "files.download_url()": ("e2b.sandbox_sync.filesystem.filesystem", "Filesystem", "download_url"),
    "files.upload_url()": ("e2b.sandbox_sync.filesystem.filesystem", "Filesystem", "upload_url"),
}


@pytest.mark.parametrize("spelling", sorted(MISSPELLED_CALLS))
def test_no_doc_uses_a_call_the_sdk_lacks(spelling: str) -> None:
    import importlib

    module, cls, attribute = MISSPELLED_CALLS[spelling]
    assert not hasattr(getattr(importlib.import_module(module), cls), attribute)
    for path in [SKILL_MD, *reference_files()]:
        assert spelling not in path.read_text(), f"{path.name} uses {spelling}"
