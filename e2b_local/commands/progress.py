"""The progress of a root-filesystem build: numbered stages with elapsed time, live on a terminal,
plain lines otherwise (a log file, a pipe)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 60 else f"{int(value // 60)} min {int(value % 60)} s"


class BuildProgress:
    """Reports `stages` as they start (`stage`) and the build's output lines (`log`), on stderr."""

    def __init__(self, stages: list[str], console: Console | None = None) -> None:
        self.stages = stages
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self._current: int | None = None
        self._started = 0.0
        self._began = time.monotonic()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def _label(self, index: int) -> str:
        return f"[{index + 1}/{len(self.stages)}] {self.stages[index]}"

    def __enter__(self) -> BuildProgress:
        if self.live:
            # The elapsed time first: a narrow terminal cuts the text on the right.
            self._progress = Progress(SpinnerColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                                      TextColumn("[dim]{task.fields[detail]}"), console=self.console,
                                      transient=True)
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._finish(failed=kind is not None)
        if self._progress is not None:
            self._progress.stop()
        if kind is None and self.stages:
            self._print(f"built in {_seconds(time.monotonic() - self._began)}")

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        else:
            self.console.print(f"[e2b-local] {text}", highlight=False, markup=False, soft_wrap=True)

    def _finish(self, failed: bool = False) -> None:
        if self._current is None:
            return
        elapsed = _seconds(time.monotonic() - self._started)
        mark = "failed" if failed else "done"
        self._print(f"{self._label(self._current)}: {mark} in {elapsed}")
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
        self._current = None

    def stage(self, title: str) -> None:
        """A stage starts (and the one before it has ended)."""
        self._finish()
        index = self.stages.index(title) if title in self.stages else len(self.stages)
        if index == len(self.stages):
            self.stages.append(title)
        self._current, self._started = index, time.monotonic()
        if self._progress is not None:
            self._task = self._progress.add_task(self._label(index), detail="")
        else:
            self._print(self._label(index))

    def log(self, line: str) -> None:
        """A line of the build's output: the live line's detail on a terminal, a line of its own otherwise."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, detail=line.strip()[:80])
        else:
            self._print(line)
