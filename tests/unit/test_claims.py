"""Host-wide claims on numbered resources, and the uid/gid range each data directory gets (temporary claim dirs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2b_local.isolation.claims import take
from e2b_local.isolation.idranges import RANGE_BASE, RANGE_FILE, SLOTS, server_range
from e2b_local.isolation.rootfs import HOST_ID_BASE, ID_RANGE


def test_a_claim_is_exclusive(tmp_path: Path) -> None:
    claim = tmp_path / "7"
    assert take(claim, "first", lambda _p: False)
    assert not take(claim, "second", lambda _p: False)
    assert claim.read_text() == "first"


def test_a_stale_claim_is_cleaned_up_and_taken_over(tmp_path: Path) -> None:
    claim = tmp_path / "7"
    claim.write_text("gone")
    cleaned: list[str] = []
    assert take(claim, "new", lambda p: p.read_text() == "gone", on_stale=lambda: cleaned.append(claim.read_text()))
    assert cleaned == ["gone"]  # called while the old claim was still there
    assert claim.read_text() == "new"


def _home(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    home.mkdir()
    return home


def test_a_range_is_recorded_and_kept(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    home = _home(tmp_path, "home")
    base = server_range(home, claims)
    assert RANGE_BASE <= base < RANGE_BASE + SLOTS * ID_RANGE
    assert (base - RANGE_BASE) % ID_RANGE == 0
    assert (home / RANGE_FILE).read_text() == str(base)
    assert server_range(home, claims) == base
    assert [p.read_text() for p in claims.iterdir()] == [str(home)]


def test_two_data_directories_never_share_a_range(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    bases = {server_range(_home(tmp_path, f"home{i}"), claims) for i in range(5)}
    assert len(bases) == 5


def test_a_legacy_data_directory_keeps_the_storage_range(tmp_path: Path) -> None:
    home = _home(tmp_path, "home")
    (home / "registry.sqlite3").touch()
    claims = tmp_path / "claims"
    assert server_range(home, claims) == HOST_ID_BASE
    assert not claims.exists()


def test_the_claim_of_a_vanished_directory_is_taken_over(tmp_path: Path) -> None:
    # Where this directory's range is claimed, learnt on a scratch claims directory.
    scratch = tmp_path / "scratch"
    home = _home(tmp_path, "home")
    base = server_range(home, scratch)
    (home / RANGE_FILE).unlink()
    (slot,) = scratch.iterdir()
    # The same slot, held by a data directory that no longer exists.
    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / slot.name).write_text(str(tmp_path / "vanished"))
    assert server_range(home, claims) == base
    assert (claims / slot.name).read_text() == str(home)


def test_a_lost_claim_is_re_established(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    home = _home(tmp_path, "home")
    base = server_range(home, claims)
    for claim in claims.iterdir():
        claim.unlink()  # as after a reboot that emptied the claims directory
    assert server_range(home, claims) == base
    assert [p.read_text() for p in claims.iterdir()] == [str(home)]


def test_a_range_held_by_another_live_directory_is_refused(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    first = _home(tmp_path, "first")
    base = server_range(first, claims)
    copy = _home(tmp_path, "copy")
    (copy / RANGE_FILE).write_text(str(base))  # a data directory copied with its range file
    with pytest.raises(RuntimeError, match=f"records host id range {base}, which {first} holds"):
        server_range(copy, claims)
