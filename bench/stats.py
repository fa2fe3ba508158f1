"""Small statistics helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def measure(fn: Callable[[], object], repeat: int, warmup: int = 2,
            between: Callable[[], object] | None = None) -> list[float]:
    """Run `fn` `warmup + repeat` times; return the last `repeat` durations in milliseconds."""
    samples = []
    for i in range(warmup + repeat):
        if between is not None:
            between()
        started = time.perf_counter()
        fn()
        elapsed = (time.perf_counter() - started) * 1000
        if i >= warmup:
            samples.append(elapsed)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    """Median, 90th percentile and minimum, in milliseconds, rounded for reading."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p90_ms": round(p90, 2),
            "min_ms": round(ordered[0], 2), "n": len(ordered)}
