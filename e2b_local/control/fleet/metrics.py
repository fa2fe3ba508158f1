"""Resource samples of each sandbox, taken every 5 seconds from its cgroups and its disk (as E2B samples)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from e2b_local.isolation.cgroups import SandboxCgroup
from e2b_local.isolation.disk import SandboxDisk

# E2B samples every 5 s; the SDK documents the same interval.
SAMPLE_INTERVAL = 5.0
# Samples kept per sandbox: two hours at one every 5 s.
MAX_SAMPLES = 1440


@dataclass(frozen=True)
class Sample:
    """One reading, in the units of E2B's `SandboxMetric`."""

    timestamp: float
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int

    def to_wire(self) -> dict[str, object]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.timestamp))
        return {
            "timestamp": f"{stamp}.{int(self.timestamp % 1 * 1000):03d}Z",
            "timestampUnix": int(self.timestamp),
            "cpuCount": self.cpu_count,
            "cpuUsedPct": round(self.cpu_used_pct, 2),
            "memUsed": self.mem_used,
            "memTotal": self.mem_total,
            "memCache": self.mem_cache,
            "diskUsed": self.disk_used,
            "diskTotal": self.disk_total,
        }


class MetricsSeries:
    """The samples of one sandbox, and the counter state needed to compute CPU percentages."""

    def __init__(self) -> None:
        self.samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        self._last: tuple[float, int] | None = None

    def sample(self, cgroup: SandboxCgroup, disk: SandboxDisk, cpu_count: int, memory_mb: int) -> None:
        """Take one reading: CPU and memory from the cgroups, disk from the sandbox's own filesystem."""
        now = time.time()
        disk_used, disk_total = disk.usage()
        usage = cgroup.usage()
        pct = 0.0
        if self._last is not None:
            wall = (now - self._last[0]) * 1e9
            if wall > 0:
                pct = min(100.0, (usage.cpu_usage_ns - self._last[1]) / (wall * cpu_count) * 100)
        self._last = (now, usage.cpu_usage_ns)
        self.samples.append(Sample(
            timestamp=now, cpu_count=cpu_count, cpu_used_pct=max(pct, 0.0), mem_used=usage.mem_used,
            mem_total=memory_mb * 1024 * 1024, mem_cache=usage.mem_cache, disk_used=disk_used,
            disk_total=disk_total,
        ))

    def between(self, start: float | None, end: float | None) -> list[Sample]:
        return [s for s in self.samples if (start is None or s.timestamp >= start) and
                (end is None or s.timestamp <= end)]
