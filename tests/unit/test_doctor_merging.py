"""`e2b-local doctor` checks page merging only when E2B_LOCAL_MERGE_PAGES asks for it."""

from __future__ import annotations

from pathlib import Path

from e2b_local.commands.doctor import _merging, checks
from e2b_local.settings import Settings


def _ksm(directory: Path, run: str) -> Path:
    directory.mkdir()
    for name, value in (("run", run), ("pages_to_scan", "100"), ("sleep_millisecs", "20")):
        (directory / name).write_text(value + "\n")
    return directory


def test_merging_is_checked_only_when_asked_for(tmp_path: Path) -> None:
    assert "page merging" not in {c.name for c in checks(Settings(home=tmp_path))}
    assert "page merging" in {c.name for c in checks(Settings(home=tmp_path, merge_pages=True))}


def test_a_stopped_ksm_passes_since_the_server_starts_it(tmp_path: Path) -> None:
    check = _merging(_ksm(tmp_path / "ksm", "0"))
    assert check.ok and check.detail == "KSM stopped (the server turns it on), scanning 100 pages every 20 ms"
    assert _merging(_ksm(tmp_path / "on", "1")).detail == "KSM running, scanning 100 pages every 20 ms"


def test_a_kernel_without_ksm_fails_with_its_fix(tmp_path: Path) -> None:
    check = _merging(tmp_path / "absent")
    assert not check.ok
    assert check.fix == "a kernel built with CONFIG_KSM, or unset E2B_LOCAL_MERGE_PAGES"
