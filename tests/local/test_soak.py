"""Soak: mixed load from a few threads against a dedicated server that is killed (-9) three times.

Opt-in (`-m soak`, or E2B_LOCAL_SOAK=1), bounded to 10 minutes. The workers create sandboxes, run
commands, write and read files, pause, resume and kill; each crash comes between operations, so
that what every worker holds is known exactly. After each restart, every held sandbox must be
listed in its state and usable, paused ones resume with their memory and files, every file reads
back byte-exact, and nothing killed comes back. The final figures are printed.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import LocalServer, _free_port, start_server, stop_server
from e2b import Sandbox

from local.persistence_helpers import read_token, start_holder

pytestmark = pytest.mark.soak

DURATION = float(os.environ.get("E2B_LOCAL_SOAK_SECONDS", "480"))
WORKERS = 3
CRASHES = 3
MAX_HELD = 4  # per worker
SANDBOX_TIMEOUT = 1800  # outlives the soak: expiry is not what is measured here


@pytest.fixture(autouse=True)
def _opt_in(request: pytest.FixtureRequest) -> None:
    if os.environ.get("E2B_LOCAL_SOAK") != "1" and "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("soak test: run with -m soak or E2B_LOCAL_SOAK=1")


@dataclass
class Held:
    sandbox: Sandbox
    token: str
    files: dict[str, bytes] = field(default_factory=dict)
    paused: bool = False


class Gate:
    """Operations share it; a crash takes it alone, so it comes between operations."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False

    def enter(self) -> None:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            while self._active:
                self._cond.wait()

    def open(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()


@dataclass
class Figures:
    ops: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    max_latency: dict[str, float] = field(default_factory=dict)
    checked_files: int = 0
    mismatches: int = 0
    memory_kept: int = 0
    resumed_after_crash: int = 0
    listed_after_crash: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: str, seconds: float) -> None:
        with self.lock:
            self.ops[op] += 1
            self.max_latency[op] = max(self.max_latency.get(op, 0.0), seconds)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


class Soak:
    def __init__(self, home: Path) -> None:
        self.home, self.port = home, _free_port()
        self.server: LocalServer = start_server(home, self.port)
        self.gate = Gate()
        self.figures = Figures()
        self.held: list[dict[str, Held]] = [{} for _ in range(WORKERS)]
        self.stop = threading.Event()

    @property
    def sdk(self) -> dict[str, str]:
        return self.server.sdk

    def timed(self, op: str, action: Callable[[], object]) -> object:
        started = time.monotonic()
        result = action()
        self.figures.record(op, time.monotonic() - started)
        return result

    def check_files(self, held: Held, sandbox: Sandbox) -> None:
        for path, content in held.files.items():
            data = bytes(self.timed("read", lambda p=path: sandbox.files.read(p, format="bytes")))
            with self.figures.lock:
                self.figures.checked_files += 1
                if data != content:
                    self.figures.mismatches += 1
                    self.figures.failures.append(f"{held.sandbox.sandbox_id}:{path} differs")

    def resume(self, held: Held) -> None:
        sandbox = self.timed("resume", lambda: Sandbox.connect(held.sandbox.sandbox_id, timeout=SANDBOX_TIMEOUT,
                                                                **self.sdk))
        held.sandbox, held.paused = sandbox, False
        if self.timed("command", lambda: read_token(sandbox)) != held.token:
            self.figures.fail(f"{sandbox.sandbox_id}: memory lost across pause")
        else:
            with self.figures.lock:
                self.figures.memory_kept += 1
        self.check_files(held, sandbox)

    def step(self, mine: dict[str, Held], rng: random.Random) -> None:
        choices = ["create"] if len(mine) < MAX_HELD else []
        if mine:
            choices += ["command", "command", "write", "write", "read", "pause", "resume", "kill"]
        op = rng.choice(choices or ["create"])
        if op == "create":
            sandbox = self.timed("create", lambda: Sandbox.create(timeout=SANDBOX_TIMEOUT, **self.sdk))
            token = start_holder(sandbox)
            mine[sandbox.sandbox_id] = Held(sandbox, token)
            return
        held = mine[rng.choice(sorted(mine))]
        if held.paused and op not in ("kill", "pause"):
            self.resume(held)
            return
        sandbox = held.sandbox
        if op == "command":
            word = f"w{rng.randrange(10**9)}"
            out = self.timed("command", lambda: sandbox.commands.run(f"echo {word}").stdout)
            if out != word + "\n":
                self.figures.fail(f"{sandbox.sandbox_id}: command printed {out!r}")
        elif op == "write":
            path = f"/home/user/f{rng.randrange(6)}.bin"
            content = rng.randbytes(rng.choice((1, 1000, 64 * 1024, 512 * 1024)))
            self.timed("write", lambda: sandbox.files.write(path, content))
            held.files[path] = content
        elif op == "read":
            self.check_files(held, sandbox)
        elif op == "pause":
            if not held.paused:
                self.timed("pause", sandbox.pause)
                held.paused = True
        elif op == "resume":
            self.timed("extend", lambda: Sandbox.connect(sandbox.sandbox_id, timeout=SANDBOX_TIMEOUT, **self.sdk))
        elif op == "kill":
            self.timed("kill", lambda: Sandbox.kill(sandbox.sandbox_id, **self.sdk))
            del mine[sandbox.sandbox_id]

    def worker(self, index: int) -> None:
        rng = random.Random(index)
        mine = self.held[index]
        while not self.stop.is_set():
            self.gate.enter()
            try:
                self.step(mine, rng)
            except Exception as exc:
                self.figures.fail(f"worker {index}: {type(exc).__name__}: {exc}")
            finally:
                self.gate.leave()

    def listed(self) -> dict[str, str]:
        paginator = Sandbox.list(**self.sdk)
        found: dict[str, str] = {}
        while paginator.has_next:
            for item in paginator.next_items():
                found[item.sandbox_id] = item.state.value
        return found

    def crash_and_check(self) -> None:
        self.gate.close()
        try:
            os.kill(self.server.process.pid, signal.SIGKILL)
            self.server.process.wait(timeout=30)
            self.server = start_server(self.home, self.port)
            listed = self.listed()
            held = {sid: h for mine in self.held for sid, h in mine.items()}
            self.figures.listed_after_crash.append(len(listed))
            for sandbox_id in set(listed) - set(held):
                self.figures.fail(f"{sandbox_id}: listed after a restart but killed before it")
            for sandbox_id, h in held.items():
                state, expected = listed.get(sandbox_id), "paused" if h.paused else "running"
                if state != expected:
                    self.figures.fail(f"{sandbox_id}: {state} after a restart, held {expected}")
                    continue
                try:
                    if h.paused:
                        self.resume(h)
                        with self.figures.lock:
                            self.figures.resumed_after_crash += 1
                    else:
                        h.sandbox = Sandbox.connect(sandbox_id, timeout=SANDBOX_TIMEOUT, **self.sdk)
                        if read_token(h.sandbox) != h.token:
                            self.figures.fail(f"{sandbox_id}: its processes did not survive the restart")
                        self.check_files(h, h.sandbox)
                except Exception as exc:
                    self.figures.fail(f"{sandbox_id} after a restart: {type(exc).__name__}: {exc}")
        finally:
            self.gate.open()


@pytest.fixture
def soak(tmp_path: Path) -> Iterator[Soak]:
    run = Soak(tmp_path / "home")
    try:
        yield run
    finally:
        stop_server(run.server)


def test_soak_with_three_crashes(soak: Soak) -> None:
    started = time.monotonic()
    threads = [threading.Thread(target=soak.worker, args=(i,), daemon=True) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for n in range(1, CRASHES + 1):
        while time.monotonic() - started < DURATION * n / (CRASHES + 1):
            time.sleep(0.5)
        soak.crash_and_check()
    while time.monotonic() - started < DURATION:
        time.sleep(0.5)
    soak.stop.set()
    for thread in threads:
        thread.join(timeout=120)
    figures = soak.figures
    held = sum(len(mine) for mine in soak.held)
    print(f"\nsoak: {time.monotonic() - started:.0f} s, {WORKERS} workers, {CRASHES} crashes (kill -9)")
    print("operations: " + ", ".join(f"{op} {n}" for op, n in sorted(figures.ops.items()))
          + f"; total {sum(figures.ops.values())}")
    print("max latency (s): " + ", ".join(f"{op} {t:.2f}" for op, t in sorted(figures.max_latency.items())))
    print(f"sandboxes listed after each crash: {figures.listed_after_crash}; paused ones resumed after a crash: "
          f"{figures.resumed_after_crash}; memory kept across pauses: {figures.memory_kept}")
    print(f"file checks: {figures.checked_files}, mismatches: {figures.mismatches}; held at the end: {held}")
    print(f"failures: {len(figures.failures)}")
    for failure in figures.failures[:20]:
        print("  " + failure)
    assert not any(thread.is_alive() for thread in threads)
    assert figures.failures == []
    assert figures.mismatches == 0
