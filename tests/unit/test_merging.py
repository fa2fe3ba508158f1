"""Turning KSM on for E2B_LOCAL_MERGE_PAGES, on a directory laid out as /sys/kernel/mm/ksm."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from e2b_local.isolation.merging import turn_on


@pytest.mark.parametrize("state", ["0", "2"])
def test_a_stopped_ksm_is_started(tmp_path: Path, state: str) -> None:
    (tmp_path / "run").write_text(state + "\n")
    assert turn_on(tmp_path) is True
    assert (tmp_path / "run").read_text() == "1"


def test_a_running_ksm_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("1\n")
    assert turn_on(tmp_path) is True
    assert (tmp_path / "run").read_text() == "1\n"


def test_without_ksm_pages_stay_unmerged_and_the_log_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="e2b_local"):
        assert turn_on(tmp_path / "absent") is False
    assert "sandboxes' pages stay unmerged: KSM cannot run here" in caplog.text
