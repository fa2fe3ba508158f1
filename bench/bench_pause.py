"""Benchmark: pause and resume of an idle sandbox through the SDK, against their floor.

The floor is freezing and thawing the same sandbox's cgroup directly, which is what a full pause
and resume do underneath; the difference is the cost of the API round trip, the registry write and
the agent health check. Filesystem-mode pause and resume (stop every process, boot a fresh agent on
the sandbox's files) are measured too, with fewer samples. The sandbox uses the code-interpreter
template when its root filesystem is built (its Python kernel running), else base. Prints JSON.

examples:
  python bench/bench_pause.py                 # 30 samples of each
  python bench/bench_pause.py --repeat 100    # more samples
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_server import local_server
from stats import summary

from e2b_local.isolation.cgroups import SandboxCgroup
from e2b_local.isolation.rootfs import RootfsStore
from e2b_local.settings import Settings

# Targets from the project's acceptance criteria (2-core machine).
TARGET_PAUSE_MS = 100
TARGET_RESUME_MS = 100
WARMUP = 2


def cgroup_of(home: Path, sandbox_id: str) -> SandboxCgroup:
    """The cgroup of a sandbox, found through the server's registry."""
    with sqlite3.connect(home / "registry.sqlite3") as db:
        (record,) = db.execute("SELECT record FROM sandboxes WHERE sandbox_id = ?", (sandbox_id,)).fetchone()
    return SandboxCgroup(json.loads(record)["key"])


def pairs(first, second, repeat: int) -> tuple[list[float], list[float]]:
    """Alternate `first` and `second`; their durations in milliseconds (after a warm-up)."""
    a, b = [], []
    for i in range(WARMUP + repeat):
        started = time.perf_counter()
        first()
        middle = time.perf_counter()
        second()
        ended = time.perf_counter()
        if i >= WARMUP:
            a.append((middle - started) * 1000)
            b.append((ended - middle) * 1000)
    return a, b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[-3:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="samples per measurement (default 30)")
    args = parser.parse_args()

    from e2b import Sandbox

    template = "code-interpreter-v1" if RootfsStore(Settings.from_environ().paths.rootfs).is_built(
        "code-interpreter-v1") else "base"
    home = Path(tempfile.mkdtemp(prefix="e2b-bench-"))
    with local_server(pool_size=1, home=home, remove=True) as settings:
        sandbox = Sandbox.create(template, timeout=3600, **settings)
        try:
            sandbox.commands.run("true")  # the agent (and kernel) fully up before measuring
            cgroup = cgroup_of(home, sandbox.sandbox_id)
            floor_freeze, floor_thaw = pairs(cgroup.freeze, cgroup.thaw, args.repeat)
            pause, resume = pairs(sandbox.pause, lambda: Sandbox.connect(sandbox.sandbox_id, **settings),
                                  args.repeat)
            fs_repeat = max(5, args.repeat // 3)
            fs_pause, fs_resume = pairs(lambda: sandbox.pause(mode="filesystem"),
                                        lambda: Sandbox.connect(sandbox.sandbox_id, **settings), fs_repeat)
        finally:
            sandbox.kill()

    results = {
        "template": template,
        "floor_cgroup_freeze": summary(floor_freeze),
        "floor_cgroup_thaw": summary(floor_thaw),
        "sdk_pause_full": summary(pause),
        "sdk_resume_full": summary(resume),
        "sdk_pause_filesystem": summary(fs_pause),
        "sdk_resume_filesystem": summary(fs_resume),
    }
    results["ratios_to_floor"] = {
        "pause_full": round(results["sdk_pause_full"]["p50_ms"] / results["floor_cgroup_freeze"]["p50_ms"], 2),
        "resume_full": round(results["sdk_resume_full"]["p50_ms"] / results["floor_cgroup_thaw"]["p50_ms"], 2),
    }
    results["targets_ms"] = {"pause_p50": TARGET_PAUSE_MS, "resume_p50": TARGET_RESUME_MS}
    results["meets_targets"] = {"pause": results["sdk_pause_full"]["p50_ms"] <= TARGET_PAUSE_MS,
                                "resume": results["sdk_resume_full"]["p50_ms"] <= TARGET_RESUME_MS}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
