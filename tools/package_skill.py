#!/usr/bin/env python3
"""Package the E2B skill as `dist/e2b.skill`: a zip whose top folder is `e2b/`.

The archive holds SKILL.md, references/ and scripts/ only (the skill's name must equal its folder
name, and nothing else of the repository, such as tests or the e2b-local server, is shipped). Caches
and editor litter are left out. Entries are sorted and time-stamped identically, so the same sources
always give the same bytes.

examples:
  python tools/package_skill.py                    # writes dist/e2b.skill
  python tools/package_skill.py --out-dir /tmp/pkg
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

# The skill's name: the top folder in the archive and the archive's file name.
SKILL_NAME = "e2b"
# What the skill consists of, relative to the repository root.
SKILL_FILES = ("SKILL.md",)
SKILL_DIRS = ("references", "scripts")
# Never shipped: byte-code caches, editor and OS litter.
EXCLUDED_DIR_NAMES = {"__pycache__", "node_modules", ".pytest_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo"}
EXCLUDED_NAMES = {".DS_Store"}
# Zip cannot store dates before 1980; a fixed date keeps the archive reproducible.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
# Unix permissions stored in the archive: scripts executable, everything else read-only for others.
MODE_EXECUTABLE = 0o755
MODE_REGULAR = 0o644

REPO_ROOT = Path(__file__).resolve().parent.parent


def skill_files(root: Path) -> Iterator[Path]:
    """Yield the files that make up the skill, in a stable order."""
    for name in SKILL_FILES:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"missing {path}")
        yield path
    for dir_name in SKILL_DIRS:
        base = root / dir_name
        if not base.is_dir():
            raise FileNotFoundError(f"missing {base}/")
        for path in sorted(base.rglob("*")):
            rel_parts = path.relative_to(root).parts
            if any(part in EXCLUDED_DIR_NAMES or part.startswith(".") for part in rel_parts):
                continue
            if not path.is_file() or path.suffix in EXCLUDED_SUFFIXES or path.name in EXCLUDED_NAMES:
                continue
            yield path


def build(root: Path, out_dir: Path) -> Path:
    """Write `<out_dir>/e2b.skill` from the skill in `root` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{SKILL_NAME}.skill"
    tmp = target.with_suffix(".skill.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in skill_files(root):
            arcname = f"{SKILL_NAME}/{path.relative_to(root).as_posix()}"
            info = zipfile.ZipInfo(arcname, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = MODE_EXECUTABLE if path.suffix == ".py" and path.parent.name == "scripts" else MODE_REGULAR
            info.external_attr = (0o100000 | mode) << 16  # regular file with these permission bits
            archive.writestr(info, path.read_bytes())
    tmp.replace(target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Build the package and print its path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root holding SKILL.md")
    args = parser.parse_args(argv)
    try:
        target = build(args.root.resolve(), args.out_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(target) as archive:
        count = len(archive.namelist())
    print(target)
    print(f"{count} files packaged", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
