"""Small statistics helpers shared by the benchmarks."""

from __future__ import annotations

import math
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


def percentile(ordered: list[float], fraction: float) -> float:
    """The sample at `fraction` (0-1) of sorted `ordered`, nearest rank: no interpolation between samples."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * fraction) - 1))]


def summary(samples: list[float]) -> dict[str, float]:
    """Median, 90th and 95th percentiles, minimum and maximum, in milliseconds.

    Rounded to the microsecond: a coarser rounding of sub-millisecond figures (a round trip of
    0.15 ms) would move the ratios computed from them by several percent.
    """
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered), 3), "p90_ms": round(percentile(ordered, 0.9), 3),
            "p95_ms": round(percentile(ordered, 0.95), 3), "min_ms": round(ordered[0], 3),
            "max_ms": round(ordered[-1], 3), "n": len(ordered)}
