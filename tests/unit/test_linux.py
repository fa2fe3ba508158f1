"""The system calls a fork makes on its way into a sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from e2b_local import linux


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _still_open_after_closing(keep: list[int]) -> tuple[list[int], list[int]]:
    """In a fork: open six descriptors, close all but stdio, the answer's and those at `keep` (indexes
    of the six). Returns (the six, those of them and of stdio still open)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            opened = [os.open("/dev/null", os.O_RDONLY) for _ in range(6)]
            linux.close_descriptors_but({0, 1, 2, write_end, *(opened[i] for i in keep)})
            still = [fd for fd in [0, 1, 2, *opened] if _is_open(fd)]
            os.write(write_end, json.dumps([opened, still]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        opened, still = json.loads(answer.read())
    os.waitpid(pid, 0)
    return opened, still


@pytest.mark.parametrize("keep", [[], [0], [2, 3], [5], [0, 1, 2, 3, 4, 5]])
def test_close_descriptors_but_closes_all_but_what_it_is_told_to_keep(keep: list[int]) -> None:
    opened, still = _still_open_after_closing(keep)
    assert still == [0, 1, 2, *(opened[i] for i in keep)], f"opened {opened}"


# Marks this process's memory, then maps more: how many of each kind of mapping carry the mark.
MARK_THEN_MAP = """
import json, mmap
from e2b_local import linux

def marked():
    flags = [line for line in open("/proc/self/smaps") if line.startswith("VmFlags:")]
    return sum(" mg" in line for line in flags)

before = marked()
marked_bytes = linux.mark_mergeable()
after = marked()
later = mmap.mmap(-1, 1 << 20)
later.write(b"x" * (1 << 20))
print(json.dumps({"before": before, "marked_bytes": marked_bytes, "after": after, "after_mapping": marked()}))
"""


def test_mark_mergeable_marks_the_memory_there_is_and_nothing_mapped_later() -> None:
    out = subprocess.run([sys.executable, "-c", MARK_THEN_MAP], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["before"] == 0
    assert seen["marked_bytes"] > 0 and seen["after"] > 0
    assert seen["after_mapping"] == seen["after"]
