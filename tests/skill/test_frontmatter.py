"""SKILL.md frontmatter: the rules of Anthropic's quick_validate.py, re-implemented, plus ours."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from .snippets import SKILL_MD

strictyaml = pytest.importorskip("strictyaml")

# quick_validate.py's whitelist of top-level keys (skills-ref uses the same set).
ALLOWED_KEYS = {"name", "description", "license", "allowed-tools", "metadata", "compatibility"}
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_COMPATIBILITY = 500
# The pinned SDK versions the skill is written and checked against.
PINNED = {"e2b-code-interpreter-version": "2.11.5", "e2b-version": "2.63.0"}


def frontmatter_text() -> str:
    content = SKILL_MD.read_text()
    match = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
    assert match, "SKILL.md must start with a --- delimited YAML frontmatter"
    return match.group(1)


@pytest.fixture(scope="module")
def frontmatter() -> dict:
    data = strictyaml.load(frontmatter_text()).data
    assert isinstance(data, dict), "frontmatter must be a mapping"
    return data


def test_only_allowed_keys(frontmatter: dict) -> None:
    assert set(frontmatter) <= ALLOWED_KEYS, f"unexpected keys: {set(frontmatter) - ALLOWED_KEYS}"
    assert "name" in frontmatter
    assert "description" in frontmatter


def test_name_is_kebab_case_and_matches_the_package_folder(frontmatter: dict) -> None:
    name = frontmatter["name"].strip()
    assert re.fullmatch(r"[a-z0-9-]+", name)
    assert not name.startswith("-") and not name.endswith("-") and "--" not in name
    assert len(name) <= MAX_NAME
    assert "anthropic" not in name and "claude" not in name
    assert name == "e2b"  # the packaged folder is e2b/


def test_description(frontmatter: dict) -> None:
    description = frontmatter["description"].strip()
    assert description
    assert "<" not in description and ">" not in description
    assert len(description) <= MAX_DESCRIPTION
    # third person, says what and when, with the words a user would say
    assert not description.lower().startswith(("i ", "you ", "use this")), description[:40]
    assert "Use it when" in description
    for trigger in ("E2B", "sandbox", "untrusted", "AI-generated", "code interpreter", "data analysis"):
        assert trigger.lower() in description.lower(), trigger


def test_compatibility(frontmatter: dict) -> None:
    compatibility = frontmatter["compatibility"]
    assert isinstance(compatibility, str) and compatibility.strip()
    assert len(compatibility) <= MAX_COMPATIBILITY
    for needle in ("Python 3.11", "E2B_API_KEY", "e2b-local", "2.11.5"):
        assert needle in compatibility, needle


def test_license_present(frontmatter: dict) -> None:
    assert frontmatter["license"].strip()


def test_metadata_pins_the_installed_sdk(frontmatter: dict) -> None:
    metadata = frontmatter["metadata"]
    assert isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    for key, version in PINNED.items():
        assert metadata[key] == version
    assert importlib.metadata.version("e2b-code-interpreter") == PINNED["e2b-code-interpreter-version"]
    assert importlib.metadata.version("e2b") == PINNED["e2b-version"]


def test_block_style_yaml_with_quoted_versions() -> None:
    text = frontmatter_text()
    for line in text.splitlines():
        key_value = re.match(r"^\s*([\w-]+):\s*(.*)$", line)
        assert key_value, f"not a block-style key: {line!r}"
        value = key_value.group(2)
        assert not value.startswith(("[", "{")), f"flow-style YAML is rejected by skills-ref: {line!r}"
        if key_value.group(1).endswith("version"):
            assert re.fullmatch(r'"[^"]+"', value), f"versions must be quoted strings: {line!r}"
