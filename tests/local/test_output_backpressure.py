"""A process's output flows as through a pipe: a slow reader slows the writer, nothing is dropped, and
the agent's memory stays bounded whatever the output size, with several readers attached."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable

from e2b import Sandbox

from e2b_local.isolation.cgroups import SandboxCgroup
from local.sandbox_helpers import registry_key
from local.test_process_ownership import agent_pid

# `seq 1 HUGE` is 988,888,898 bytes (about 1 GB) of a pattern whose checksum catches any byte lost,
# repeated or out of order; every byte crosses three Python processes, about 25 s on a quiet two-core
# machine.
HUGE = 110_000_000
# With two readers the client does twice the work: a smaller stream (168,888,897 bytes).
LARGE = 20_000_000
# `seq` writes 4 KiB at a time, and each write would wake the agent: full blocks stream much faster.
BLOCKS = "dd bs=1M iflag=fullblock status=none"
# A reader stops reading for STALL_SECONDS once it has this much.
STALL_AT = 64 << 20
STALL_SECONDS = 4.0
# How much the agent's resident memory may grow while it streams, and how much a reader may get while
# another one stalls (the buffers between the process and a client hold a few MB).
RSS_BOUND = 64 << 20
AHEAD_BOUND = 64 << 20


def rss(pid: int) -> int:
    """The resident memory of a host process, in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


class Reader:
    """Counts and checksums a command's stdout as the SDK hands it over."""

    def __init__(self, on_chunk: Callable[[Reader], None] | None = None) -> None:
        self.size = 0
        self.digest = hashlib.sha256()
        self.on_chunk = on_chunk
        self.error: BaseException | None = None
        self.exit_code: int | None = None

    def feed(self, chunk: str) -> None:
        data = chunk.encode()
        self.size += len(data)
        self.digest.update(data)
        if self.on_chunk is not None:
            self.on_chunk(self)

    def follow(self, handle) -> threading.Thread:
        """Read `handle` to its end in a thread."""

        def run() -> None:
            try:
                self.exit_code = handle.wait(on_stdout=self.feed).exit_code
            except BaseException as exc:
                self.error = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


class PeakMemory:
    """Samples a process's resident memory in the background and keeps the highest value."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        """Stop sampling; how much the memory grew at its highest."""
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


def expected_seq(end: int) -> tuple[int, str]:
    """Size and sha256 of `seq 1 end`, computed on the host."""
    out = subprocess.run(f"seq 1 {end} | tee >(wc -c >&2) | sha256sum", shell=True, executable="/bin/bash",
                         capture_output=True, text=True, check=True)
    return int(out.stderr.strip()), out.stdout.split()[0]


class Expected:
    """`expected_seq`, computed in the background while the sandbox streams."""

    def __init__(self, end: int) -> None:
        self._value: tuple[int, str] | None = None
        self._thread = threading.Thread(target=self._compute, args=(end,), daemon=True)
        self._thread.start()

    def _compute(self, end: int) -> None:
        self._value = expected_seq(end)

    def get(self) -> tuple[int, str]:
        self._thread.join()
        assert self._value is not None
        return self._value


def start_held(sandbox: Sandbox, command: str):
    """Start `command` once a line arrives on its stdin (send it with `release`), so that every
    reader can attach before it writes."""
    return sandbox.commands.run(f"read -r _; {command}", background=True, stdin=True, retain_output=False,
                                timeout=0)


def release(sandbox: Sandbox, handle) -> None:
    sandbox.commands.send_stdin(handle.pid, "go\n")


def wait_all(threads: list[threading.Thread], limit: float) -> None:
    deadline = time.monotonic() + limit
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "the output did not arrive in time"


def test_a_stalled_reader_of_a_huge_output_leaves_the_agent_small_and_gets_every_byte(e2b_server) -> None:
    expected = Expected(HUGE)
    sandbox = Sandbox.create()
    try:
        agent = agent_pid(SandboxCgroup(registry_key(e2b_server.home, sandbox.sandbox_id)))
        sandbox.commands.run("true")  # the agent's first request has loaded what it needs
        memory = PeakMemory(agent)
        stalls: list[int] = []

        def stall_once(reader: Reader) -> None:
            if reader.size >= STALL_AT and not stalls:
                stalls.append(reader.size)
                time.sleep(STALL_SECONDS)

        reader = Reader(stall_once)
        handle = start_held(sandbox, f"seq 1 {HUGE} | {BLOCKS}")
        thread = reader.follow(handle)
        release(sandbox, handle)
        wait_all([thread], 300)
        growth = memory.stop()
        assert reader.error is None, reader.error
        assert stalls, "the reader never stalled"
        assert os.path.exists(f"/proc/{agent}") and rss(agent) > 0, "the agent died"
        assert growth < RSS_BOUND, f"the agent's memory grew by {growth >> 20} MB while streaming"
        assert reader.exit_code == 0
        assert (reader.size, reader.digest.hexdigest()) == expected.get()
        assert sandbox.commands.run("echo alive").stdout == "alive\n"
    finally:
        with contextlib.suppress(Exception):
            sandbox.kill()


def test_a_stalled_reader_holds_back_the_writer_for_every_reader(sandbox: Sandbox) -> None:
    expected = Expected(LARGE)
    handle = start_held(sandbox, f"seq 1 {LARGE} | {BLOCKS}")
    other = Reader()
    other_handle = sandbox.commands.connect(handle.pid, timeout=0, retain_output=False)
    progress: dict[str, int] = {}

    def stall_once(reader: Reader) -> None:
        if reader.size >= STALL_AT and not progress:
            progress["before"] = other.size
            time.sleep(STALL_SECONDS)
            progress["after"] = other.size

    first = Reader(stall_once)
    threads = [first.follow(handle), other.follow(other_handle)]
    release(sandbox, handle)
    wait_all(threads, 300)
    assert first.error is None and other.error is None, (first.error, other.error)
    ahead = progress["after"] - progress["before"]
    assert ahead < AHEAD_BOUND, f"the writer went on while a reader stalled: the other got {ahead >> 20} MB meanwhile"
    for reader in (first, other):
        assert reader.exit_code == 0
        assert (reader.size, reader.digest.hexdigest()) == expected.get()


def test_a_reader_that_leaves_while_stalled_releases_the_others(sandbox: Sandbox) -> None:
    expected = Expected(LARGE)
    handle = start_held(sandbox, f"seq 1 {LARGE} | {BLOCKS}")
    # Attached but never read, until it disconnects.
    idle_handle = sandbox.commands.connect(handle.pid, timeout=0, retain_output=False)
    reader = Reader()
    thread = reader.follow(handle)
    release(sandbox, handle)
    # The idle reader holds the writer back: the other one stops short of the end...
    deadline = time.monotonic() + 60
    held = -1
    while time.monotonic() < deadline and reader.size != held:
        held = reader.size
        time.sleep(STALL_SECONDS / 2)
    assert reader.size == held and thread.is_alive(), "the output went on although a reader did not read"
    assert held < AHEAD_BOUND, f"{held >> 20} MB went out while a reader did not read"
    # ...until it leaves.
    idle_handle.disconnect()
    wait_all([thread], 300)
    assert reader.error is None, reader.error
    assert reader.exit_code == 0
    assert (reader.size, reader.digest.hexdigest()) == expected.get()


# run_code: the cell prints CELL_PRINTS blocks of CELL_BLOCK characters, pausing between them longer
# than the kernel's output flush interval (0.2 s), so that each block travels as its own message.
CELL_PRINTS = 80
CELL_BLOCK = 2 << 20
CELL_PAUSE = 0.21


def test_a_stalled_run_code_reader_leaves_the_agent_small_and_gets_every_output(e2b_server) -> None:
    from e2b_code_interpreter import Sandbox as CodeSandbox

    with CodeSandbox.create() as sandbox:
        peak = PeakMemory(agent_pid(SandboxCgroup(registry_key(e2b_server.home, sandbox.sandbox_id))))
        received = {"bytes": 0, "stalled": False}
        digest = hashlib.sha256()

        def on_stdout(message) -> None:
            data = message.line.encode()
            received["bytes"] += len(data)
            digest.update(data)
            if not received["stalled"]:
                received["stalled"] = True
                time.sleep(CELL_PRINTS * CELL_PAUSE * 0.75)  # most of the cell's run time

        code = (f"import time\nfor i in range({CELL_PRINTS}):\n"
                f"    print(str(i % 10) * {CELL_BLOCK - 1}, flush=True)\n    time.sleep({CELL_PAUSE})")
        execution = sandbox.run_code(code, on_stdout=on_stdout, timeout=300)
        growth = peak.stop()
        assert execution.error is None
        expected = "".join(str(i % 10) * (CELL_BLOCK - 1) + "\n" for i in range(CELL_PRINTS)).encode()
        assert received["bytes"] == len(expected)
        assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()
        assert growth < RSS_BOUND, f"the agent grew by {growth >> 20} MB while its reader stalled"
        assert sandbox.run_code("1 + 1").text == "2"
