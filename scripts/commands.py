#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = ["e2b-code-interpreter==2.11.5", "e2b==2.63.0", "python-dotenv>=1.0"]
# ///
"""Run shell commands in an E2B sandbox: in the foreground (streamed), in the background, list,
kill and send input to running processes; print JSON.

`run` without --sandbox-id creates a sandbox and kills it afterwards (unless --keep). `background`
without --sandbox-id creates a sandbox and leaves it running, since the process lives in it.
Commands run through `bash -l -c` as the user `user` in /home/user unless --user / --cwd say otherwise.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from typing import Any

from sandbox_backend import (
    DEFAULT_MAX_OUTPUT,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    add_backend_args,
    clip,
    emit_json,
    fail,
    keep_notice,
    kill_quietly,
    log,
    make_parser,
    parse_pairs,
    run_main,
    select_backend,
    to_jsonable,
)

EPILOG = f"""examples:
  python scripts/commands.py run "uname -a && python3 --version"
  python scripts/commands.py run --sandbox-id SANDBOX_ID --cwd /tmp --env DEBUG=1 "ls -la"
  python scripts/commands.py run --timeout 600 --sandbox-id SANDBOX_ID "pip install pandas"
  python scripts/commands.py background --sandbox-id SANDBOX_ID "python3 -m http.server 8000"
  python scripts/commands.py background --stdin --sandbox-id SANDBOX_ID "cat > /tmp/in.txt"
  python scripts/commands.py send-stdin SANDBOX_ID PID "some text" --eof
  python scripts/commands.py list SANDBOX_ID
  python scripts/commands.py kill SANDBOX_ID PID

output: JSON on stdout. run: {{"exit_code", "stdout", "stderr", "error", "truncated"}} (output is also
streamed to stderr while it runs, unless --quiet); background: {{"sandbox_id", "pid"}}; list:
{{"processes": [{{command, pid, cmd, args, cwd, tag}}]}} (command: the command line as given; cmd is
the shell that runs it); kill: {{"killed": true|false}}.

{EXIT_CODES_HELP}
  (1 here: the command exited non-zero; 4: no such sandbox or process)"""

# Foreground limit in seconds, the SDK's own default: a command still running after 60 s is stopped.
DEFAULT_RUN_TIMEOUT_S = 60
# Background processes get no limit by default: the command timeout also bounds the process's life,
# and a server started in the background should live as long as its sandbox.
DEFAULT_BACKGROUND_TIMEOUT_S = 0


def parse_args(argv: Sequence[str] | None) -> Any:
    """Parse the command line."""
    parser = make_parser(__doc__, EPILOG)
    add_backend_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, text in (
        ("run", "run a command and wait for it (output streamed to stderr)"),
        ("background", "start a command in the background and print its PID"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("cmd", help="shell command line (quote it)")
        p.add_argument("--sandbox-id", help="run in this sandbox (never killed by this script)")
        p.add_argument("--cwd", help="working directory (default /home/user)")
        p.add_argument("--user", help="user to run as: user (default) or root")
        p.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment variable (repeatable)")
        p.add_argument("--template", help="template for a new sandbox (default: base)")
        p.add_argument("--sandbox-timeout", type=int, metavar="SECONDS", help="lifetime of a new sandbox")
        default = DEFAULT_RUN_TIMEOUT_S if name == "run" else DEFAULT_BACKGROUND_TIMEOUT_S
        p.add_argument(
            "--timeout",
            type=float,
            default=default,
            metavar="SECONDS",
            help=f"command time limit in seconds, 0 = none (default {default})",
        )
        if name == "run":
            p.add_argument("--keep", action="store_true", help="leave a new sandbox running afterwards")
            p.add_argument("--quiet", action="store_true", help="do not stream output to stderr")
            p.add_argument(
                "--max-output",
                type=int,
                default=DEFAULT_MAX_OUTPUT,
                metavar="CHARS",
                help=f"clip stdout and stderr in the JSON (default {DEFAULT_MAX_OUTPUT})",
            )
        else:
            p.add_argument("--stdin", action="store_true", help="keep stdin open for send-stdin")

    p = sub.add_parser("list", help="list running processes started through E2B")
    p.add_argument("sandbox_id")

    p = sub.add_parser("kill", help="kill a process (SIGKILL)")
    p.add_argument("sandbox_id")
    p.add_argument("pid", type=int)

    p = sub.add_parser("send-stdin", help="send text to a process started with --stdin")
    p.add_argument("sandbox_id")
    p.add_argument("pid", type=int)
    p.add_argument("data", nargs="?", help="text to send (default: read from stdin)")
    p.add_argument("--eof", action="store_true", help="close the process's stdin afterwards")
    return parser.parse_args(argv)


def command_line(process: Any) -> str:
    """The command a process runs: the script of `bash -l -c SCRIPT` (how E2B starts commands), else cmd + args."""
    args = list(process.args or [])
    if process.cmd.endswith("bash") and len(args) >= 3 and args[0] == "-l" and args[1] == "-c":
        return args[2]
    return shlex.join([process.cmd, *args])


def run_foreground(sandbox: Any, args: Any, envs: dict[str, str]) -> tuple[dict[str, Any], int]:
    """Run the command to completion; return the JSON fields and the exit code."""
    from e2b import CommandExitException

    def echo(chunk: str) -> None:
        sys.stderr.write(chunk)
        sys.stderr.flush()

    stream = None if args.quiet else echo
    try:
        result = sandbox.commands.run(
            args.cmd,
            envs=envs or None,
            user=args.user,
            cwd=args.cwd,
            timeout=args.timeout,
            on_stdout=stream,
            on_stderr=stream,
        )
        exit_code, stdout, stderr, error = result.exit_code, result.stdout, result.stderr, result.error
    except CommandExitException as exc:
        exit_code, stdout, stderr, error = exc.exit_code, exc.stdout, exc.stderr, exc.error
    truncated: dict[str, int] = {}
    stdout, cut = clip(stdout, args.max_output)
    if cut:
        truncated["stdout"] = cut
    stderr, cut = clip(stderr, args.max_output)
    if cut:
        truncated["stderr"] = cut
    fields = {"exit_code": exit_code, "stdout": stdout, "stderr": stderr, "error": error, "truncated": truncated}
    return fields, EXIT_OK if exit_code == 0 else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and print its JSON result; return the exit code."""
    args = parse_args(argv)
    envs = parse_pairs(getattr(args, "env", None), "--env")
    if args.command in ("run", "background"):
        if not args.cmd.strip():
            fail("the command is empty")
        if args.sandbox_id and args.template:
            fail("--template only applies to a new sandbox", fix="drop --template or --sandbox-id")
    data: bytes | None = None
    if args.command == "send-stdin":
        if args.data is not None:
            data = args.data.encode()
        elif not sys.stdin.isatty():
            data = sys.stdin.buffer.read()
        elif not args.eof:
            fail("send-stdin needs DATA, data on stdin, or --eof")

    backend = select_backend(args.backend)
    from e2b import Sandbox

    if args.command in ("list", "kill", "send-stdin"):
        sandbox = Sandbox.connect(args.sandbox_id)
        result: dict[str, Any] = {"sandbox_id": sandbox.sandbox_id, "backend": backend.kind}
        if args.command == "list":
            result["processes"] = [{"command": command_line(p), **to_jsonable(p)} for p in sandbox.commands.list()]
            emit_json(result)
            return EXIT_OK
        if args.command == "kill":
            killed = sandbox.commands.kill(args.pid)
            result.update({"pid": args.pid, "killed": killed})
            emit_json(result)
            if not killed:
                log(f"no process with PID {args.pid} in sandbox {sandbox.sandbox_id}")
                return EXIT_NOT_FOUND
            return EXIT_OK
        if data:
            sandbox.commands.send_stdin(args.pid, data)
        if args.eof:
            sandbox.commands.close_stdin(args.pid)
        result.update({"pid": args.pid, "sent_bytes": len(data or b""), "closed_stdin": args.eof})
        emit_json(result)
        return EXIT_OK

    if args.sandbox_id:
        sandbox = Sandbox.connect(args.sandbox_id, timeout=args.sandbox_timeout)
        created = False
    else:
        sandbox = Sandbox.create(template=args.template, timeout=args.sandbox_timeout)
        created = True
        log(f"created sandbox {sandbox.sandbox_id}")
    keep = args.command == "background" or args.keep

    exit_code = EXIT_OK
    try:
        result = {"sandbox_id": sandbox.sandbox_id, "backend": backend.kind, "command": args.cmd}
        if args.command == "background":
            handle = sandbox.commands.run(
                args.cmd,
                background=True,
                envs=envs or None,
                user=args.user,
                cwd=args.cwd,
                stdin=True if args.stdin else None,
                timeout=args.timeout,
            )
            result["pid"] = handle.pid
            handle.disconnect()  # stop receiving its output; the process keeps running
            log(f"started PID {handle.pid}; redirect output to a file in the command to read it later")
        else:
            fields, exit_code = run_foreground(sandbox, args, envs)
            result.update(fields)
        result["kept"] = (not created) or keep
        emit_json(result)
    finally:
        if created and not keep:
            kill_quietly(sandbox)
        elif created:
            keep_notice(sandbox.sandbox_id)
    return exit_code


if __name__ == "__main__":
    run_main(main)
