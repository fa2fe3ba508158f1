"""Pure helpers of the dashboard's pages: durations, sizes, paths and the metrics chart's geometry."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The chart's drawing area, in SVG user units (the page scales it).
CHART_WIDTH = 600
CHART_HEIGHT = 160
# Samples drawn: the last five minutes at E2B's one sample every 5 s.
CHART_SAMPLES = 60


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time as the API writes it, or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    """A short human duration: "45s", "3m 05s", "2h 10m", "4d 3h"; "-" when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def size(value: Any) -> str:
    """A byte count as "512 B", "1.5 KiB", "12.0 MiB"; the API's int64 may come as a string."""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return "-"


def sandbox_row(sandbox: dict[str, Any], now: float) -> dict[str, Any]:
    """A listed sandbox (the API's shape) with its age and time left worked out for the page."""
    started = parse_time(sandbox.get("startedAt"))
    end = parse_time(sandbox.get("endAt"))
    running = sandbox.get("state") == "running"
    return {
        "id": sandbox.get("sandboxID", ""),
        "template": sandbox.get("alias") or sandbox.get("templateID", ""),
        "state": sandbox.get("state", ""),
        "metadata": dict(sandbox.get("metadata") or {}),
        "age": duration(now - started if started is not None else None),
        "left": duration(end - now if end is not None and running else None),
        "left_seconds": int(end - now) if end is not None and running else None,
        "cpu": sandbox.get("cpuCount"),
        "memory": sandbox.get("memoryMB"),
    }


def parent(path: str) -> str | None:
    """The directory above an absolute sandbox path, None at the root."""
    normal = posixpath.normpath("/" + path.lstrip("/"))
    return None if normal == "/" else posixpath.dirname(normal)


def breadcrumbs(path: str) -> list[tuple[str, str]]:
    """(name, path) for each directory from the root down to `path`."""
    normal = posixpath.normpath("/" + path.lstrip("/"))
    crumbs = [("/", "/")]
    walked = ""
    for part in [p for p in normal.split("/") if p]:
        walked += "/" + part
        crumbs.append((part, walked))
    return crumbs


@dataclass(frozen=True)
class Chart:
    """The polylines of the CPU and memory chart, as SVG `points` attributes, and the latest readings."""

    cpu_points: str
    mem_points: str
    samples: int
    last_timestamp: str
    cpu_now: str
    mem_now: str


def _points(values: list[float], count: int) -> str:
    # The newest sample sits at the right edge; fewer samples than the width fill from the right.
    step = CHART_WIDTH / max(count - 1, 1)
    offset = count - len(values)
    return " ".join(f"{(offset + i) * step:.1f},{CHART_HEIGHT - max(0.0, min(v, 100.0)) / 100 * CHART_HEIGHT:.1f}"
                    for i, v in enumerate(values))


def chart(samples: list[dict[str, Any]], count: int = CHART_SAMPLES) -> Chart:
    """The chart of the last `count` metrics samples (the API's `SandboxMetric` shape): CPU % and memory %."""
    recent = samples[-count:]
    cpu = [float(s.get("cpuUsedPct") or 0) for s in recent]
    mem = [100.0 * float(s.get("memUsed") or 0) / float(s["memTotal"]) if s.get("memTotal") else 0.0
           for s in recent]
    last = recent[-1] if recent else {}
    return Chart(
        cpu_points=_points(cpu, count),
        mem_points=_points(mem, count),
        samples=len(samples),
        last_timestamp=str(last.get("timestamp", "")),
        cpu_now=f"{cpu[-1]:.1f}%" if cpu else "-",
        mem_now=f"{size(last.get('memUsed'))} of {size(last.get('memTotal'))}" if last else "-",
    )


def log_lines(body: Any) -> list[str]:
    """The lines of a logs answer in E2B's shape (`logs`: [{timestamp, line}] or `logEntries`)."""
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("logs"), list):
        return [f"{e.get('timestamp', '')} {e.get('line', '')}".strip() for e in body["logs"] if isinstance(e, dict)]
    if isinstance(body.get("logEntries"), list):
        return [f"{e.get('timestamp', '')} {e.get('level', '')} {e.get('message', '')}".strip()
                for e in body["logEntries"] if isinstance(e, dict)]
    return []
