#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = ["e2b-code-interpreter==2.11.5", "e2b==2.63.0", "python-dotenv>=1.0"]
# ///
"""Show CPU, memory and disk usage of a running E2B sandbox, once or repeatedly.

E2B samples a sandbox's metrics every 5 seconds; a brand-new sandbox may have no sample yet.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sandbox_backend import (
    EXIT_CODES_HELP,
    EXIT_OK,
    add_backend_args,
    emit_json,
    emit_json_line,
    fail,
    log,
    make_parser,
    run_main,
    select_backend,
    to_jsonable,
)

EPILOG = f"""examples:
  python scripts/metrics.py SANDBOX_ID                    # latest sample as JSON
  python scripts/metrics.py SANDBOX_ID --history          # every sample since the sandbox started
  python scripts/metrics.py SANDBOX_ID --watch 5 --count 12 --format table

output: JSON {{"sandbox_id", "backend", "metrics": [{{timestamp, cpu_count, cpu_used_pct, mem_used,
mem_total, mem_cache, disk_used, disk_total}}]}} (bytes and percent); "metrics" is empty before the
first sample. With --watch: one JSON object per line per new sample (or table rows).

{EXIT_CODES_HELP}"""

# E2B takes a sample every 5 s: polling faster only repeats the last sample.
SAMPLE_INTERVAL_S = 5
# Default number of readings in --watch mode: one minute at the sampling interval, so the script ends.
DEFAULT_WATCH_COUNT = 12
# Bytes per MiB, for the table view.
MIB = 1024 * 1024


def parse_args(argv: Sequence[str] | None) -> Any:
    """Parse the command line."""
    parser = make_parser(__doc__, EPILOG)
    parser.add_argument("sandbox_id")
    parser.add_argument("--history", action="store_true", help="print every sample, not just the latest")
    parser.add_argument(
        "--watch", type=float, metavar="SECONDS", help=f"poll every SECONDS (E2B samples every {SAMPLE_INTERVAL_S} s)"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=DEFAULT_WATCH_COUNT,
        help=f"with --watch: stop after this many polls (default {DEFAULT_WATCH_COUNT}; 0 = until interrupted)",
    )
    parser.add_argument("--format", choices=["json", "table"], default="json", help="output format (default json)")
    add_backend_args(parser)
    return parser.parse_args(argv)


def sample_dict(sample: Any) -> dict[str, Any]:
    """One SandboxMetrics as plain JSON values."""
    return to_jsonable(sample)


def read_samples(sandbox_cls: Any, sandbox_id: str) -> list[dict[str, Any]]:
    """All samples of a sandbox as JSON values, oldest first."""
    samples = [sample_dict(s) for s in sandbox_cls.get_metrics(sandbox_id)]
    return sorted(samples, key=lambda s: datetime.fromisoformat(s["timestamp"]))


TABLE_HEADER = f"{'time (UTC)':<19} {'cpu%':>6} {'cpus':>4} {'mem MiB':>15} {'cache MiB':>9} {'disk MiB':>17}"


def table_row(s: dict[str, Any]) -> str:
    """Format one sample as a table row."""
    mem = f"{s['mem_used'] / MIB:.0f}/{s['mem_total'] / MIB:.0f}"
    disk = f"{s['disk_used'] / MIB:.0f}/{s['disk_total'] / MIB:.0f}"
    when = datetime.fromisoformat(s["timestamp"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{when:<19} {s['cpu_used_pct']:>6.1f} {s['cpu_count']:>4} {mem:>15} {s['mem_cache'] / MIB:>9.0f} {disk:>17}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print metrics; return the exit code."""
    args = parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        fail("--watch needs a positive number of seconds", fix=f"for example --watch {SAMPLE_INTERVAL_S}")
    if args.count < 0:
        fail("--count cannot be negative")
    if args.watch is not None and args.watch < SAMPLE_INTERVAL_S:
        log(f"note: E2B samples every {SAMPLE_INTERVAL_S} s; polling every {args.watch} s repeats samples")

    backend = select_backend(args.backend)
    from e2b import Sandbox

    if args.watch is None:
        samples = read_samples(Sandbox, args.sandbox_id)
        if not samples:
            log(f"no sample yet: E2B samples every {SAMPLE_INTERVAL_S} s, retry in a few seconds")
        shown = samples if args.history else samples[-1:]
        if args.format == "table":
            print(TABLE_HEADER)
            for s in shown:
                print(table_row(s))
        else:
            emit_json({"sandbox_id": args.sandbox_id, "backend": backend.kind, "metrics": shown})
        return EXIT_OK

    if args.format == "table":
        print(TABLE_HEADER, flush=True)
    last_seen: datetime | None = None
    polls = 0
    while args.count == 0 or polls < args.count:
        if polls:
            time.sleep(args.watch)
        polls += 1
        samples = read_samples(Sandbox, args.sandbox_id)
        fresh = [s for s in samples if last_seen is None or datetime.fromisoformat(s["timestamp"]) > last_seen]
        if not args.history and last_seen is None:
            fresh = fresh[-1:]
        for s in fresh:
            if args.format == "table":
                print(table_row(s), flush=True)
            else:
                emit_json_line({"sandbox_id": args.sandbox_id, **s})
        if samples:
            last_seen = datetime.fromisoformat(samples[-1]["timestamp"])
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
