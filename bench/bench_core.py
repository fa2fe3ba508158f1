"""Benchmark: Sandbox.create() and commands.run("true") through the SDK, against their floor.

The floor is spawning /bin/true directly in the same isolation: bubblewrap with user, pid, mount,
network, ipc and uts namespaces, the same root filesystem and the same seccomp filter, and nothing of
e2b-local in between. Everything runs in one process, side by side, and prints JSON.

examples:
  python bench/bench_core.py                 # 30 samples of each
  python bench/bench_core.py --repeat 100    # more samples
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_server import local_server
from stats import measure, summary

from e2b_local.isolation.rootfs import RootfsStore
from e2b_local.isolation.seccomp import compiled_filter
from e2b_local.settings import Settings

# Targets from the project's acceptance criteria (2-core machine).
TARGET_CREATE_MS = 100
TARGET_RUN_TRUE_MS = 15
# Time for the warm pool to start a replacement sandbox between two creates.
POOL_REFILL_WAIT = 1.5


def floor_command(rootfs: Path, seccomp_fd: int) -> list[str]:
    """bwrap running /bin/true in the sandbox's kind of isolation."""
    return ["bwrap", "--unshare-user", "--uid", "0", "--gid", "0", "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--seccomp", str(seccomp_fd), "--", "/bin/true"]


def run_floor(rootfs: Path, seccomp_file: Path) -> None:
    """Spawn /bin/true in that isolation and wait for it."""
    with open(seccomp_file, "rb") as f:
        subprocess.run(floor_command(rootfs, f.fileno()), check=True, pass_fds=(f.fileno(),),
                       stdin=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[-3:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="samples per measurement (default 30)")
    args = parser.parse_args()

    from e2b import Sandbox

    paths = Settings.from_environ().paths
    rootfs = RootfsStore(paths.rootfs).ensure_base()
    seccomp_file = compiled_filter(Path("/tmp/e2b-bench-seccomp.bpf"))
    floor = summary(measure(lambda: run_floor(rootfs, seccomp_file), args.repeat))

    results: dict[str, object] = {"floor_bwrap_true": floor}
    with local_server(pool_size=1) as settings:
        created: list[Sandbox] = []
        create = summary(measure(lambda: created.append(Sandbox.create(**settings)), args.repeat,
                                 between=lambda: (created and created.pop().kill(), time.sleep(POOL_REFILL_WAIT))))
        for sandbox in created:
            sandbox.kill()
        sandbox = Sandbox.create(**settings)
        try:
            run_true = summary(measure(lambda: sandbox.commands.run("true"), args.repeat * 3))
        finally:
            sandbox.kill()
    with local_server(pool_size=0) as settings:
        cold_created: list[Sandbox] = []
        cold = summary(measure(lambda: cold_created.append(Sandbox.create(**settings)), max(5, args.repeat // 3),
                               warmup=1, between=lambda: cold_created and cold_created.pop().kill()))
        for sandbox in cold_created:
            sandbox.kill()

    results.update({
        "sdk_create_warm_pool": create,
        "sdk_create_no_pool": cold,
        "sdk_commands_run_true": run_true,
        "ratios_to_floor": {
            "create_warm_pool": round(create["p50_ms"] / floor["p50_ms"], 2),
            "create_no_pool": round(cold["p50_ms"] / floor["p50_ms"], 2),
            "commands_run_true": round(run_true["p50_ms"] / floor["p50_ms"], 2),
        },
        "targets_ms": {"create_p50": TARGET_CREATE_MS, "commands_run_true_p50": TARGET_RUN_TRUE_MS},
        "meets_targets": {"create": create["p50_ms"] <= TARGET_CREATE_MS,
                          "commands_run_true": run_true["p50_ms"] <= TARGET_RUN_TRUE_MS},
    })
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
