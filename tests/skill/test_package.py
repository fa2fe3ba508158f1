"""tools/package_skill.py: dist/e2b.skill holds exactly the skill, in an e2b/ folder, and validates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .snippets import REPO_ROOT, SCRIPTS, reference_files

PACKAGER = REPO_ROOT / "tools" / "package_skill.py"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(PACKAGER), "--out-dir", str(out_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == out_dir / "e2b.skill"
    return path


@pytest.fixture(scope="module")
def extracted(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(package) as archive:
        archive.extractall(root)
    return root / "e2b"


def test_archive_holds_only_the_skill(package: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        names = archive.namelist()
    assert all(name.startswith("e2b/") for name in names)
    expected = {"e2b/SKILL.md"}
    expected |= {f"e2b/references/{p.name}" for p in reference_files()}
    expected |= {f"e2b/scripts/{p.name}" for p in SCRIPTS.glob("*.py")}
    assert set(names) == expected
    for name in names:
        assert "__pycache__" not in name and not name.endswith((".pyc", ".DS_Store"))
        assert not name.startswith(("e2b/tests", "e2b/e2b_local", "e2b/tools"))


def test_scripts_keep_their_executable_bit(package: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        mode = archive.getinfo("e2b/scripts/run_code.py").external_attr >> 16
    assert mode & 0o111


def test_package_is_reproducible(package: Path, tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(PACKAGER), "--out-dir", str(tmp_path)], capture_output=True, check=True)
    assert (tmp_path / "e2b.skill").read_bytes() == package.read_bytes()


def test_reference_validator_accepts_the_package(extracted: Path) -> None:
    pytest.importorskip("skills_ref")
    from skills_ref.validator import validate

    assert validate(extracted) == []


def test_skills_ref_command_line_accepts_the_package(extracted: Path) -> None:
    pytest.importorskip("skills_ref")
    result = subprocess.run(
        [sys.executable, "-m", "skills_ref.cli", "validate", str(extracted)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid skill" in result.stdout


def test_packaged_scripts_run_from_the_package(extracted: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(extracted / "scripts" / "run_code.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
