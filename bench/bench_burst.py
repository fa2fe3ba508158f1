"""Benchmark: creates and contexts under bursts, and memory of idle sandboxes, each beside its floor.

Figures (all code-interpreter-v1 unless named):
- 20 back-to-back creates, after a first burst of as many has grown the warm pool (it follows demand)
- 10 creates at once from threads: wall time and slowest
- create with nothing pre-started (E2B_LOCAL_POOL_SIZE=0): base, and code interpreter + first run_code
- create_code_context(): the first of a sandbox, the next ones (on the spare kernel), back to back
- run_code("1+1") against a direct jupyter_client round trip in the same sandbox
- commands.run("true") against spawning /bin/true in the same isolation
- N idle sandboxes (each ran a cell): memory per sandbox, and the curve (memory, create latency,
  run_code latency) as their number grows
Floors: bwrap /bin/true in the sandbox's isolation (creates, commands), a direct jupyter_client round
trip (run_code, contexts). Prints JSON; ratios are value / floor.

examples:
  python bench/bench_burst.py                 # 40 idle sandboxes
  python bench/bench_burst.py --idle 500      # the issue's figure (needs a quiet machine)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_code_interpreter import direct_round_trips
from bench_core import run_floor
from local_server import local_server
from stats import measure

from e2b_local.isolation.rootfs import RootfsStore
from e2b_local.isolation.seccomp import compiled_filter
from e2b_local.settings import Settings

TEMPLATE = "code-interpreter-v1"
BACK_TO_BACK = 20
CONCURRENT = 10
# The targets, in ms (and a ratio for run_code).
TARGETS = {"back_to_back_p50": 30, "back_to_back_p95": 100, "concurrent_wall": 600, "no_pool_base": 150,
           "no_pool_create_and_first_run_code": 250, "create_code_context": 100, "run_code_ratio": 1.25,
           "idle_memory_mb": 25, "idle_run_code": 50}
# How long the pool may take to reach the size a burst asked for.
FILL_DEADLINE = 300.0


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 1)

    return {"p50_ms": round(statistics.median(ordered), 1), "p95_ms": pct(0.95), "max_ms": round(ordered[-1], 1),
            "n": len(ordered)}


def figure(value: float, floor: float | None, target: float | None = None) -> dict[str, object]:
    """A measured value beside its floor (None: it has none) and its target."""
    out: dict[str, object] = {"value": round(value, 1)}
    if floor is not None:
        out.update(floor=round(floor, 2), ratio=round(value / floor, 2))
    if target is not None:
        out["target"] = target
        out["meets_target"] = value <= target
    return out


def timed(fn: object, *args: object, **kwargs: object) -> tuple[object, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)  # type: ignore[operator]
    return result, (time.perf_counter() - started) * 1000


def wait_pool(home: Path, registered: int, at_least: int) -> None:
    """Wait until the server's sandbox directories number `registered` plus `at_least` pooled ones."""
    deadline = time.monotonic() + FILL_DEADLINE
    while len(list((home / "sandboxes").iterdir())) < registered + at_least and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)  # the last boots' agents answer after their directories exist


def memory_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[-3:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=40, help="idle sandboxes for the memory curve (default 40)")
    parser.add_argument("--cold", type=int, default=5, help="samples of each create with no pool (default 5)")
    args = parser.parse_args()

    from e2b import Sandbox as BaseSandbox
    from e2b_code_interpreter import Sandbox

    paths = Settings.from_environ().paths
    rootfs = RootfsStore(paths.rootfs).ensure_base()
    seccomp_file = compiled_filter(Path("/tmp/e2b-bench-seccomp.bpf"))
    bwrap = statistics.median(measure(lambda: run_floor(rootfs, seccomp_file), 20))
    with ThreadPoolExecutor(CONCURRENT) as pool:
        _, bwrap_concurrent = timed(lambda: list(pool.map(lambda _: run_floor(rootfs, seccomp_file),
                                                          range(CONCURRENT))))
    results: dict[str, object] = {"floor_bwrap_true_ms": round(bwrap, 2),
                                  "floor_bwrap_true_10_at_once_wall_ms": round(bwrap_concurrent, 2)}

    home = Path(f"/tmp/e2b-bench-burst-{int(time.time())}")
    home.mkdir()
    with local_server(pool_size=1, home=home, extra_env={"E2B_LOCAL_POOL_MAX": str(BACK_TO_BACK)}) as settings:
        wait_pool(home, 0, 2)
        # A first burst: the pool grows to the demand it saw.
        first = [Sandbox.create(TEMPLATE, **settings) for _ in range(BACK_TO_BACK)]
        for sandbox in first:
            sandbox.kill()
        wait_pool(home, 0, BACK_TO_BACK + 1)
        samples, created = [], []
        for _ in range(BACK_TO_BACK):
            sandbox, ms = timed(Sandbox.create, TEMPLATE, **settings)
            created.append(sandbox)
            samples.append(ms)
        back_to_back = stats(samples)
        for sandbox in created:
            sandbox.kill()
        wait_pool(home, 0, CONCURRENT + 1)
        with ThreadPoolExecutor(CONCURRENT) as pool:
            def one(_: int) -> tuple[object, float]:
                return timed(Sandbox.create, TEMPLATE, **settings)
            outcome, wall = timed(lambda: list(pool.map(one, range(CONCURRENT))))
        slowest = max(ms for _, ms in outcome)  # type: ignore[union-attr]
        for sandbox, _ in outcome:  # type: ignore[union-attr]
            sandbox.kill()  # type: ignore[attr-defined]

        sandbox = Sandbox.create(TEMPLATE, **settings)
        try:
            sandbox.run_code("1+1")
            _, first_context = timed(sandbox.create_code_context)
            next_contexts = []
            for _ in range(5):
                time.sleep(1.5)  # the spare of the previous create starts meanwhile
                _, ms = timed(sandbox.create_code_context)
                next_contexts.append(ms)
            back_to_back_contexts = [timed(sandbox.create_code_context)[1] for _ in range(3)]
            direct = statistics.median(direct_round_trips(sandbox, 30))
            run_code = statistics.median(measure(lambda: sandbox.run_code("1+1"), 30, warmup=3))
            run_true = statistics.median(measure(lambda: sandbox.commands.run("true"), 30))
        finally:
            sandbox.kill()

        # Idle sandboxes: memory and latencies as their number grows.
        curve = []
        idle: list[Sandbox] = []
        baseline = memory_available_mb()
        steps = sorted({max(1, args.idle * k // 4) for k in range(1, 5)})
        for step in steps:
            creates = []
            while len(idle) < step:
                sandbox, ms = timed(Sandbox.create, TEMPLATE, timeout=3600, **settings)
                sandbox.run_code("x = 1")
                idle.append(sandbox)
                creates.append(ms)
            time.sleep(3.0)
            runs = [timed(s.run_code, "1+1")[1] for s in idle]
            used = baseline - memory_available_mb()
            curve.append({"sandboxes": step, "memory_per_sandbox_mb": round(used / step, 1),
                          "create_p50_ms": round(statistics.median(creates), 1),
                          "run_code_p50_ms": round(statistics.median(runs), 1),
                          "run_code_max_ms": round(max(runs), 1)})
        for sandbox in idle:
            sandbox.kill()

    with local_server(pool_size=0) as settings:
        cold_base, cold_ci = [], []
        for _ in range(args.cold):
            sandbox, ms = timed(BaseSandbox.create, **settings)
            sandbox.kill()
            cold_base.append(ms)
            started = time.perf_counter()
            sandbox = Sandbox.create(TEMPLATE, **settings)
            sandbox.run_code("1+1")
            cold_ci.append((time.perf_counter() - started) * 1000)
            sandbox.kill()

    last = curve[-1]
    results.update({
        "back_to_back_creates": {**back_to_back,
                                 "p50": figure(back_to_back["p50_ms"], bwrap, TARGETS["back_to_back_p50"]),
                                 "p95": figure(back_to_back["p95_ms"], bwrap, TARGETS["back_to_back_p95"])},
        "concurrent_creates": {"wall": figure(wall, bwrap_concurrent, TARGETS["concurrent_wall"]),
                               "slowest_ms": round(slowest, 1)},
        "no_pool_create_base": figure(statistics.median(cold_base), bwrap, TARGETS["no_pool_base"]),
        "no_pool_create_and_first_run_code": figure(statistics.median(cold_ci), bwrap,
                                                    TARGETS["no_pool_create_and_first_run_code"]),
        "create_code_context_first": figure(first_context, direct),
        "create_code_context_next": figure(statistics.median(next_contexts), direct, TARGETS["create_code_context"]),
        "create_code_context_back_to_back_ms": [round(ms, 1) for ms in back_to_back_contexts],
        "run_code": figure(run_code, direct, direct * TARGETS["run_code_ratio"]),
        "commands_run_true": figure(run_true, bwrap),
        "idle_sandboxes": {"count": last["sandboxes"],
                           "memory_per_sandbox": figure(last["memory_per_sandbox_mb"], None, TARGETS["idle_memory_mb"]),
                           "run_code_max": figure(last["run_code_max_ms"], direct, TARGETS["idle_run_code"]),
                           "curve": curve},
        "pause_resume": "see bench/bench_pause.py",
    })
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
