"""The agent's journal: process output becomes log lines, bounded in number, size and rate."""

from __future__ import annotations

from e2b_local.agent.journal import BURST, MAX_LINE, OUTPUT_CAPACITY, Journal


def _messages(journal: Journal) -> list[str]:
    return [e["message"] for e in journal.since(None, 0)["entries"]]


def test_output_lines_are_assembled_across_chunks_per_stream() -> None:
    journal = Journal()
    journal.process_started(7, "sh", ["-c", "x"], "user", None)
    journal.process_output(7, "stdout", b"ab")
    journal.process_output(7, "stderr", b"err\n")
    journal.process_output(7, "stdout", b"c\nd\r\nunfinished")
    journal.process_ended(7, "sh -c x", 0)
    entries = journal.since(None, 0)["entries"]
    assert [e["message"] for e in entries] == ["Process started", "err", "abc", "d", "unfinished", "Process exited"]
    assert [e["fields"].get("stream") for e in entries[1:5]] == ["stderr", "stdout", "stdout", "stdout"]
    assert all(e["fields"]["pid"] == "7" for e in entries)


def test_long_lines_are_cut_and_a_flood_is_counted_not_kept() -> None:
    journal = Journal()
    journal.process_output(1, "stdout", b"x" * (3 * MAX_LINE) + b"\n")
    assert _messages(journal) == ["x" * MAX_LINE]
    flood = b"".join(b"line %d\n" % i for i in range(3 * OUTPUT_CAPACITY))
    journal.process_output(1, "stdout", flood)
    journal.process_started(2, "true", [], "user", None)
    messages = _messages(journal)
    # The newest lines of the burst are kept, the count of the others noted before them, and the start
    # of another process is not pushed out by them.
    assert messages.count("Process started") == 1
    assert f"line {3 * OUTPUT_CAPACITY - 1}" in messages and "line 0" not in messages
    noted = [m for m in messages if m.endswith("bytes of output not kept (written too fast)")]
    assert len(noted) == 1 and int(noted[0].split()[0]) > len(b"line 0\n") * (3 * OUTPUT_CAPACITY - BURST)
    assert len([m for m in messages if m.startswith("line ")]) <= BURST
