#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = ["e2b-code-interpreter==2.11.5", "e2b==2.63.0", "python-dotenv>=1.0"]
# ///
"""Create, list, inspect, pause, resume, extend and kill E2B sandboxes; print JSON.

Sandboxes made by `create` keep running until their timeout (300 s unless --timeout) or until
`kill`; with `--on-timeout pause` they are paused instead of killed when the timeout passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sandbox_backend import (
    EXIT_CODES_HELP,
    EXIT_NOT_FOUND,
    EXIT_OK,
    add_backend_args,
    emit_json,
    fail,
    log,
    make_parser,
    parse_pairs,
    run_main,
    select_backend,
    to_jsonable,
)

EPILOG = f"""examples:
  python scripts/lifecycle.py create --timeout 600 --metadata owner=alice
  python scripts/lifecycle.py create --on-timeout pause --auto-resume
  python scripts/lifecycle.py list --state running --metadata owner=alice
  python scripts/lifecycle.py info SANDBOX_ID
  python scripts/lifecycle.py set-timeout SANDBOX_ID 1800
  python scripts/lifecycle.py pause SANDBOX_ID            # keeps memory and files
  python scripts/lifecycle.py resume SANDBOX_ID --timeout 600
  python scripts/lifecycle.py kill SANDBOX_ID [SANDBOX_ID ...]
  python scripts/lifecycle.py kill --all --metadata owner=alice --dry-run   # list what would be killed
  python scripts/lifecycle.py kill --all --metadata owner=alice
  python scripts/lifecycle.py kill --all --yes          # every sandbox of the backend, other people's too

output (JSON on stdout): create/info/connect/resume print the sandbox info (sandbox_id, template_id,
state, started_at, end_at, metadata, cpu_count, memory_mb, ...); list prints {{"sandboxes": [...]}};
pause prints {{"paused": true|false}} (false: it was already paused); kill prints {{"killed": [...],
"not_found": [...]}}, or with --dry-run {{"would_kill": [...]}} and kills nothing.

The backend may hold sandboxes of other people or programs (a shared E2B team, a shared e2b-local):
`kill --all` needs a --metadata filter that selects yours, or --yes to confirm killing everything
that matches (--state alone does not tell your sandboxes from theirs).

{EXIT_CODES_HELP}
  (4 here: the sandbox does not exist, or no sandbox given to kill was found)"""

# The template `create` uses when none is given: the code interpreter, so that every script
# (run_code.py included) can work with the new sandbox.
DEFAULT_TEMPLATE = "code-interpreter-v1"
# How many sandboxes `list` prints at most unless --limit says otherwise (keeps output bounded).
DEFAULT_LIST_LIMIT = 100
# Page size asked of the API while listing (the API's own maximum page is larger; 100 keeps pages small).
PAGE_SIZE = 100


def parse_args(argv: Sequence[str] | None) -> Any:
    """Parse the command line."""
    parser = make_parser(__doc__, EPILOG)
    add_backend_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("create", help="create a sandbox and leave it running")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help=f"template name or ID (default {DEFAULT_TEMPLATE})")
    p.add_argument("--timeout", type=int, metavar="SECONDS", help="lifetime in seconds (API default 300)")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="metadata tag (repeatable)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment variable (repeatable)")
    p.add_argument(
        "--on-timeout", choices=["kill", "pause"], help="what happens when the timeout passes (API default: kill)"
    )
    p.add_argument("--auto-resume", action="store_true", help="with --on-timeout pause: resume on the next request")
    p.add_argument("--no-internet", action="store_true", help="create without outbound internet access")

    p = sub.add_parser("list", help="list sandboxes (running and paused unless --state)")
    p.add_argument("--state", action="append", choices=["running", "paused"], help="filter by state (repeatable)")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="filter by metadata (all must match)")
    p.add_argument("--template", help="filter by template name or ID")
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIST_LIMIT,
        help=f"print at most this many (default {DEFAULT_LIST_LIMIT})",
    )

    p = sub.add_parser("info", help="show one sandbox")
    p.add_argument("sandbox_id")

    for name, text in (
        ("connect", "connect to a sandbox (resumes it if paused)"),
        ("resume", "resume a paused sandbox"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("sandbox_id")
        p.add_argument("--timeout", type=int, metavar="SECONDS", help="new lifetime from now, in seconds")
        p.add_argument(
            "--reboot",
            action="store_true",
            help="cold-boot from the saved files instead of restoring memory (on_resume='reboot')",
        )

    p = sub.add_parser("pause", help="pause a sandbox (it stays until killed)")
    p.add_argument("sandbox_id")
    p.add_argument(
        "--mode",
        choices=["full", "filesystem"],
        help="full keeps memory and files (default); filesystem keeps files only",
    )

    p = sub.add_parser("set-timeout", help="set the remaining lifetime (from now; can shorten it)")
    p.add_argument("sandbox_id")
    p.add_argument("seconds", type=int)

    p = sub.add_parser("kill", help="kill sandboxes by ID, or all that match --all filters")
    p.add_argument("sandbox_ids", nargs="*", metavar="SANDBOX_ID")
    p.add_argument("--all", action="store_true", help="kill every sandbox matching the filters below")
    p.add_argument("--state", action="append", choices=["running", "paused"], help="with --all: filter by state")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="with --all: filter by metadata")
    p.add_argument(
        "--yes", action="store_true", help="with --all and no --metadata: confirm killing every matching sandbox"
    )
    p.add_argument("--dry-run", action="store_true", help="print the sandboxes that would be killed; kill none")
    return parser.parse_args(argv)


def info_dict(info: Any) -> dict[str, Any]:
    """A SandboxInfo as plain JSON values."""
    return to_jsonable(info)


def list_sandboxes(states: list[str] | None, metadata: dict[str, str], template: str | None, limit: int) -> list[Any]:
    """Page through Sandbox.list with a SandboxQuery until `limit` sandboxes are collected."""
    from e2b import Sandbox, SandboxQuery, SandboxState

    query = SandboxQuery(
        metadata=metadata or None,
        state=[SandboxState(s) for s in states] if states else None,
        template=template,
    )
    paginator = Sandbox.list(query=query, limit=min(PAGE_SIZE, max(limit, 1)))
    found: list[Any] = []
    while paginator.has_next and len(found) < limit:
        found.extend(paginator.next_items())
    return found[:limit]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and print its JSON result; return the exit code."""
    args = parse_args(argv)
    metadata = parse_pairs(getattr(args, "metadata", None), "--metadata")
    envs = parse_pairs(getattr(args, "env", None), "--env")
    if args.command == "create" and args.auto_resume and args.on_timeout != "pause":
        fail("--auto-resume needs --on-timeout pause", fix="add --on-timeout pause")
    if args.command == "kill" and not args.sandbox_ids and not args.all:
        fail("kill needs sandbox IDs or --all", fix="pass IDs, or --all with optional --state/--metadata filters")
    if args.command == "kill" and args.sandbox_ids and args.all:
        fail("pass sandbox IDs or --all, not both")
    if args.command == "kill" and args.all and not metadata and not args.yes and not args.dry_run:
        fail(
            "kill --all without a --metadata filter would kill every sandbox of the backend, "
            "including other people's",
            fix="add --metadata KEY=VALUE to select yours (check with --dry-run), or --yes to kill them all",
        )
    if args.command == "list" and args.limit < 1:
        fail("--limit must be at least 1")

    backend = select_backend(args.backend)
    from e2b import Sandbox

    if args.command == "create":
        lifecycle = None
        if args.on_timeout:
            lifecycle = {"on_timeout": args.on_timeout}
            if args.auto_resume:
                lifecycle["auto_resume"] = True
        sandbox = Sandbox.create(
            template=args.template,
            timeout=args.timeout,
            metadata=metadata or None,
            envs=envs or None,
            lifecycle=lifecycle,
            allow_internet_access=False if args.no_internet else None,
        )
        log(
            f"created sandbox {sandbox.sandbox_id} "
            f"(kill it with: python scripts/lifecycle.py kill {sandbox.sandbox_id})"
        )
        emit_json({"backend": backend.kind, **info_dict(sandbox.get_info())})
        return EXIT_OK

    if args.command == "list":
        sandboxes = list_sandboxes(args.state, metadata, args.template, args.limit)
        emit_json({"backend": backend.kind, "count": len(sandboxes), "sandboxes": [info_dict(s) for s in sandboxes]})
        return EXIT_OK

    if args.command == "info":
        emit_json({"backend": backend.kind, **info_dict(Sandbox.get_info(args.sandbox_id))})
        return EXIT_OK

    if args.command in ("connect", "resume"):
        sandbox = Sandbox.connect(
            args.sandbox_id, timeout=args.timeout, on_resume="reboot" if args.reboot else "restore"
        )
        emit_json({"backend": backend.kind, **info_dict(sandbox.get_info())})
        return EXIT_OK

    if args.command == "pause":
        paused = Sandbox.pause(args.sandbox_id, mode=args.mode)
        if not paused:
            log(f"sandbox {args.sandbox_id} was already paused")
        emit_json({"backend": backend.kind, "sandbox_id": args.sandbox_id, "paused": paused})
        return EXIT_OK

    if args.command == "set-timeout":
        Sandbox.set_timeout(args.sandbox_id, args.seconds)
        emit_json({"backend": backend.kind, **info_dict(Sandbox.get_info(args.sandbox_id))})
        return EXIT_OK

    # kill
    if args.all:
        targets = [s.sandbox_id for s in list_sandboxes(args.state, metadata, None, limit=10**9)]
        if not args.dry_run:
            log(f"killing {len(targets)} sandbox(es) matching the filters")
    else:
        targets = args.sandbox_ids
    if args.dry_run:
        emit_json({"backend": backend.kind, "would_kill": targets})
        return EXIT_OK
    killed, not_found = [], []
    for sandbox_id in targets:
        (killed if Sandbox.kill(sandbox_id) else not_found).append(sandbox_id)
    emit_json({"backend": backend.kind, "killed": killed, "not_found": not_found})
    if not_found and not killed and not args.all:
        return EXIT_NOT_FOUND
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
