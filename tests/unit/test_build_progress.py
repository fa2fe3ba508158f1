"""The root-filesystem build's progress: numbered stages with their elapsed time, on a terminal and in a log."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
from rich.console import Console

from e2b_local.commands.progress import BuildProgress
from e2b_local.isolation.rootfs import BASE_STAGES, CODE_INTERPRETER_STAGES

STAGES = [*BASE_STAGES, *CODE_INTERPRETER_STAGES]


def _run(terminal: bool, fail: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200, color_system=None)
    expected = pytest.raises(RuntimeError) if fail else contextlib.nullcontext()
    with expected, BuildProgress(list(STAGES), console) as progress:
        for title in STAGES[:3 if fail else None]:
            progress.stage(title)
            progress.log("  Downloading numpy-2.4.6.whl (16.6 MB)")
        if fail:
            raise RuntimeError("pip failed")
    return out.getvalue()


def test_plain_lines_number_every_stage_and_time_it() -> None:
    text = _run(terminal=False)
    lines = text.splitlines()
    for number, title in enumerate(STAGES, 1):
        assert f"[e2b-local] [{number}/{len(STAGES)}] {title}" in lines
        assert re.search(rf"^\[e2b-local\] \[{number}/{len(STAGES)}\] {re.escape(title)}: done in \d+ s$", text,
                         re.MULTILINE)
    assert lines.count("[e2b-local]   Downloading numpy-2.4.6.whl (16.6 MB)") == len(STAGES)
    assert re.search(r"^\[e2b-local\] built in \d+ s$", text, re.MULTILINE)
    assert "\x1b" not in text


def test_a_terminal_keeps_the_finished_stages_with_their_time() -> None:
    text = _run(terminal=True)
    for number, title in enumerate(STAGES, 1):
        assert re.search(rf"\[{number}/{len(STAGES)}\] {re.escape(title)}: done in \d+ s", text)
    # The live line (spinner, elapsed time, the latest output line) is redrawn, not printed as log lines.
    assert "\x1b[" in text
    assert "[e2b-local]" not in text


def test_a_failed_stage_says_so() -> None:
    text = _run(terminal=False, fail=True)
    assert re.search(rf"\[3/{len(STAGES)}\] {re.escape(STAGES[2])}: failed in \d+ s", text)
    assert "built in" not in text
