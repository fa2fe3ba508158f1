#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = ["e2b-code-interpreter==2.11.5", "e2b==2.63.0", "python-dotenv>=1.0"]
# ///
"""Move files in and out of a running E2B sandbox, list, read, write and watch them; print JSON.

Every subcommand works on an existing sandbox (create one with lifecycle.py create). Relative sandbox
paths start at the user's home, /home/user. Connecting resumes a paused sandbox.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox_backend import (
    EXIT_CODES_HELP,
    EXIT_OK,
    add_backend_args,
    clip,
    emit_json,
    fail,
    log,
    make_parser,
    run_main,
    select_backend,
    to_jsonable,
    upload_plan,
)

EPILOG = f"""examples:
  python scripts/files.py upload SANDBOX_ID data.csv /home/user/data.csv
  python scripts/files.py upload SANDBOX_ID ./project /home/user/project     # a whole folder
  python scripts/files.py download SANDBOX_ID /home/user/plot.png plot.png
  python scripts/files.py list SANDBOX_ID /home/user --depth 2
  python scripts/files.py read SANDBOX_ID /home/user/notes.txt
  python scripts/files.py write SANDBOX_ID /home/user/config.json --content '{{"debug": true}}'
  echo hello | python scripts/files.py write SANDBOX_ID /home/user/hello.txt
  python scripts/files.py watch SANDBOX_ID /home/user --duration 30 --recursive

output: JSON on stdout. list: {{"entries": [{{name, path, type, size, permissions, owner, modified_time,
...}}]}}; read: {{"content", "bytes", "truncated"}}; watch: {{"events": [{{"name", "type"}}]}}.

{EXIT_CODES_HELP}
  (4 here: the sandbox or the file does not exist)"""

# Largest file `read` prints inline (bytes); bigger or binary files should be downloaded instead.
DEFAULT_MAX_BYTES = 100_000
# How often `watch` asks for new events: often enough to feel live, rare enough to be cheap.
WATCH_POLL_S = 0.5
# Default watch length in seconds: long enough to catch a short job's writes, short enough to end.
DEFAULT_WATCH_S = 10
# Most events `watch` keeps; the rest are counted, so the output stays bounded.
MAX_EVENTS = 1000


def parse_args(argv: Sequence[str] | None) -> Any:
    """Parse the command line."""
    parser = make_parser(__doc__, EPILOG)
    add_backend_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "upload",
        help="copy a local file or folder into the sandbox",
        description="Copy a local file, or a whole folder with everything under it, into the sandbox.",
        epilog="examples:\n  files.py upload SANDBOX_ID data.csv /home/user/data.csv\n"
        "  files.py upload SANDBOX_ID ./project /home/user/project     # a folder: its tree is recreated",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sandbox_id")
    p.add_argument("local", help="a local file, or a folder (copied with all its files)")
    p.add_argument("remote", help="the sandbox path of the file, or of the folder's copy")

    p = sub.add_parser("download", help="copy a sandbox file to the local disk")
    p.add_argument("sandbox_id")
    p.add_argument("remote")
    p.add_argument("local")

    p = sub.add_parser("list", help="list a directory")
    p.add_argument("sandbox_id")
    p.add_argument("path", nargs="?", default="/home/user")
    p.add_argument("--depth", type=int, default=1, help="how many levels to descend (default 1)")

    p = sub.add_parser("read", help="print a text file")
    p.add_argument("sandbox_id")
    p.add_argument("path")
    p.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"print at most about this many characters (default {DEFAULT_MAX_BYTES})",
    )

    p = sub.add_parser("write", help="write a file from --content, --file or stdin")
    p.add_argument("sandbox_id")
    p.add_argument("path")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--content", help="text to write")
    src.add_argument("--file", help="local file to write (binary-safe)")

    p = sub.add_parser("watch", help="collect filesystem events for a while")
    p.add_argument("sandbox_id")
    p.add_argument("path")
    p.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_WATCH_S,
        help=f"seconds to watch (default {DEFAULT_WATCH_S})",
    )
    p.add_argument("--recursive", action="store_true", help="include subdirectories")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and print its JSON result; return the exit code."""
    args = parse_args(argv)
    plan: list[tuple[Path, str]] = []
    payload: bytes | None = None
    if args.command == "upload":
        plan = upload_plan(args.local, args.remote)
        if not plan:
            fail(f"folder {args.local!r} has no files to upload")
    if args.command == "write":
        if args.content is not None:
            payload = args.content.encode()
        elif args.file:
            try:
                payload = Path(args.file).read_bytes()
            except OSError as exc:
                fail(f"cannot read --file {args.file}: {exc.strerror}")
        elif not sys.stdin.isatty():
            payload = sys.stdin.buffer.read()
        else:
            fail("write needs --content, --file or data on stdin")
    if args.command == "list" and args.depth < 1:
        fail("--depth must be at least 1")
    if args.command == "watch" and args.duration <= 0:
        fail("--duration must be positive")

    backend = select_backend(args.backend)
    from e2b import Sandbox

    sandbox = Sandbox.connect(args.sandbox_id)
    files = sandbox.files
    result: dict[str, Any] = {"sandbox_id": sandbox.sandbox_id, "backend": backend.kind}

    if args.command == "upload":
        files.write_files([{"path": remote, "data": local.read_bytes()} for local, remote in plan])
        result["uploaded"] = [{"local": str(local), "remote": remote} for local, remote in plan]

    elif args.command == "download":
        target = Path(args.local).expanduser()
        if target.is_dir() or args.local.endswith(("/", "\\")):  # an existing or intended folder
            target = target / Path(args.remote).name
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with files.read(args.remote, format="stream") as stream, target.open("wb") as out:
            for chunk in stream:
                out.write(chunk)
                size += len(chunk)
        result.update({"remote": args.remote, "local": str(target), "bytes": size})

    elif args.command == "list":
        entries = files.list(args.path, depth=args.depth)
        result.update({"path": args.path, "entries": [to_jsonable(e) for e in entries]})

    elif args.command == "read":
        data = bytes(files.read(args.path, format="bytes"))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            fail(
                f"{args.path} is not UTF-8 text ({len(data)} bytes)",
                fix=f"download it: python scripts/files.py download {args.sandbox_id} {args.path} LOCAL_PATH",
            )
        content, cut = clip(text, args.max_bytes)
        result.update({"path": args.path, "bytes": len(data), "content": content, "truncated": cut})

    elif args.command == "write":
        info = files.write(args.path, payload or b"")
        result.update({"path": info.path, "bytes": len(payload or b"")})

    else:  # watch
        handle = files.watch_dir(args.path, recursive=args.recursive)
        events: list[dict[str, str]] = []
        dropped = 0
        log(f"watching {args.path} for {args.duration:g} s ...")
        deadline = time.monotonic() + args.duration
        try:
            while True:
                for event in handle.get_new_events():
                    if len(events) < MAX_EVENTS:
                        events.append({"name": event.name, "type": event.type.value})
                    else:
                        dropped += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(WATCH_POLL_S, remaining))
        finally:
            handle.stop()
        result.update({"path": args.path, "events": events, "dropped": dropped})

    emit_json(result)
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
