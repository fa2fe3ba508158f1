#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = ["e2b-code-interpreter==2.11.5", "e2b==2.63.0", "python-dotenv>=1.0"]
# ///
"""Run code in an E2B code-interpreter sandbox and print the outcome as JSON.

The code comes from --code, --file or stdin. A new sandbox is created and killed afterwards unless
--keep is given; --sandbox-id reuses a running (or paused) sandbox and never kills it. State (variables,
imports) persists between runs in the same sandbox.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox_backend import (
    DEFAULT_MAX_OUTPUT,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    add_backend_args,
    clip,
    describe_error,
    emit_json,
    fail,
    keep_notice,
    kill_quietly,
    log,
    make_parser,
    parse_pairs,
    run_main,
    select_backend,
    split_pair,
    to_jsonable,
    upload_plan,
)

EPILOG = f"""examples:
  python scripts/run_code.py --code "print(6*7)"
  python scripts/run_code.py --file analysis.py --upload data.csv:/home/user/data.csv
  echo 'console.log(1+1)' | python scripts/run_code.py --language javascript
  python scripts/run_code.py --code "import os; os.listdir('.')" --keep
  python scripts/run_code.py --sandbox-id SANDBOX_ID --code "x"          # reuse: state is kept
  python scripts/run_code.py --code "df.to_csv('out.csv')" --sandbox-id SANDBOX_ID \\
      --download /home/user/out.csv:out.csv
  python scripts/run_code.py --no-images --download /home/user/chart.png:chart.png \\
      --code "import matplotlib.pyplot as plt; plt.plot([1, 4, 9]); plt.savefig('chart.png')"

output (JSON on stdout):
  sandbox_id, backend, kept, language, stdout, stderr, text (value of the last expression),
  results[] (every rich result: formats, text, is_main_result, files{{png,jpeg,svg,pdf: path}}, ...),
  error {{name, value, traceback}} or null, execution_count, uploaded[], downloaded[], truncated{{}}.
  Images are written to files and only their paths are printed: to --output-dir when given, else to
  a new temporary folder (its path is printed on stderr), never to the working folder unasked.
  Figures are displayed at the end of every cell (plt.savefig alone and PIL's Image.save display
  too), so a cell that draws gives image results; for one named file, savefig in the sandbox and
  --download REMOTE:LOCAL, with --no-images to skip the copies.

{EXIT_CODES_HELP}
  (1 here: the code raised; 4 also when a --download file does not exist)"""

# Binary MIME fields of a result, written to files: field -> (file extension, base64-encoded?).
IMAGE_FIELDS = {"png": ("png", True), "jpeg": ("jpg", True), "pdf": ("pdf", True), "svg": ("svg", False)}
# Text fields of a result, printed inline (clipped like stdout).
TEXT_FIELDS = ("text", "html", "markdown", "latex", "javascript")
# Structured fields of a result, printed inline when small, written to a .json file when large.
DATA_FIELDS = ("json", "data", "extra")


def parse_args(argv: Sequence[str] | None) -> Any:
    """Parse the command line."""
    parser = make_parser(__doc__, EPILOG)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--code", help="code to run")
    source.add_argument("--file", help="local file whose content is the code to run")
    parser.add_argument(
        "--language",
        help="python (default), javascript (js), typescript (ts), bash; E2B cloud also has r and java",
    )
    parser.add_argument("--sandbox-id", help="reuse this sandbox (it is never killed by this script)")
    parser.add_argument("--keep", action="store_true", help="leave the new sandbox running afterwards")
    parser.add_argument(
        "--template", help="template for a new sandbox (default: code-interpreter-v1, the SDK's default)"
    )
    parser.add_argument(
        "--sandbox-timeout",
        type=int,
        metavar="SECONDS",
        help="lifetime of a new sandbox in seconds (default 300); with --sandbox-id, extends it",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        metavar="SECONDS",
        help="limit for this execution in seconds (default 300, as in the SDK; 0 = no limit)",
    )
    parser.add_argument(
        "--env", action="append", metavar="KEY=VALUE", help="environment variable for this run (repeatable)"
    )
    parser.add_argument(
        "--upload", action="append", metavar="LOCAL:REMOTE", help="copy a file or folder in before running"
    )
    parser.add_argument("--download", action="append", metavar="REMOTE:LOCAL", help="copy a file out after running")
    parser.add_argument(
        "--output-dir",
        help="folder for images and large data from rich results (default: a new temporary folder, "
        "created only when needed; its path is printed on stderr)",
    )
    parser.add_argument(
        "--no-images",
        action="store_true",
        help="write no image files; results still list their formats",
    )
    parser.add_argument(
        "--max-output",
        type=int,
        default=DEFAULT_MAX_OUTPUT,
        metavar="CHARS",
        help=f"clip stdout, stderr and text results to about this many characters (default {DEFAULT_MAX_OUTPUT})",
    )
    parser.add_argument("--stream", action="store_true", help="also echo output to stderr as it arrives")
    add_backend_args(parser)
    return parser.parse_args(argv)


def read_code(args: Any) -> str:
    """The code to run, from --code, --file or stdin."""
    if args.code is not None:
        code = args.code
    elif args.file:
        try:
            code = Path(args.file).read_text()
        except OSError as exc:
            fail(f"cannot read --file {args.file}: {exc.strerror}", fix="check the path")
    elif not sys.stdin.isatty():
        code = sys.stdin.read()
    else:
        fail("no code given", fix="pass --code CODE, --file PATH, or pipe the code on stdin")
    if not code.strip():
        fail("the code is empty", fix="pass some code with --code, --file or stdin")
    return code


class OutputDir:
    """Where result files go: the folder the user named, or a temporary one made on first use."""

    def __init__(self, requested: str | None) -> None:
        self.requested = Path(requested) if requested else None
        self.path: Path | None = None
        self.written: list[str] = []

    def file(self, name: str) -> Path:
        """A path for a new result file, creating the folder when needed."""
        if self.path is None:
            if self.requested is not None:
                self.requested.mkdir(parents=True, exist_ok=True)
                self.path = self.requested
            else:
                self.path = Path(tempfile.mkdtemp(prefix="e2b-output-"))
        path = self.path / name
        self.written.append(str(path))
        return path

    def report(self) -> None:
        """Say on stderr where result files went when the user did not choose the folder."""
        if self.written and self.requested is None:
            log(
                f"wrote {len(self.written)} result file(s) to {self.path} (every figure a cell draws is displayed, "
                "savefig included; --output-dir DIR chooses the folder, --no-images skips images)"
            )


def save_result(
    result: Any, index: int, stem: str, out_dir: OutputDir, max_output: int, images: bool = True
) -> dict[str, Any]:
    """Describe one rich result; images and large data go to files whose paths are listed."""
    entry: dict[str, Any] = {"is_main_result": bool(result.is_main_result), "formats": list(result.formats())}
    files: dict[str, str] = {}
    truncated: dict[str, int] = {}
    for field, (ext, is_b64) in IMAGE_FIELDS.items():
        value = getattr(result, field, None)
        if not value or not images:
            continue
        path = out_dir.file(f"{stem}-{index}.{ext}")
        if is_b64:
            path.write_bytes(base64.b64decode(value))
        else:
            path.write_text(value)
        files[field] = str(path)
    for field in TEXT_FIELDS:
        value = getattr(result, field, None)
        if value:
            entry[field], cut = clip(value, max_output)
            if cut:
                truncated[field] = cut
    structured = dict((f, getattr(result, f, None)) for f in DATA_FIELDS)
    chart = getattr(result, "chart", None)
    structured["chart"] = chart.to_dict() if chart is not None else None
    for field, value in structured.items():
        if not value:
            continue
        value = to_jsonable(value)
        if len(json.dumps(value)) <= max_output:
            entry[field] = value
        else:
            path = out_dir.file(f"{stem}-{index}-{field}.json")
            path.write_text(json.dumps(value, indent=2))
            files[field] = str(path)
    if files:
        entry["files"] = files
    if truncated:
        entry["truncated"] = truncated
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    """Run the code and print the JSON report; return the exit code."""
    args = parse_args(argv)
    code = read_code(args)
    envs = parse_pairs(args.env, "--env")
    uploads = [upload_plan(*split_pair(u, "--upload", remote_first=False)) for u in args.upload or []]
    downloads = [split_pair(d, "--download", remote_first=True) for d in args.download or []]
    if args.sandbox_id and args.template:
        fail("--template only applies to a new sandbox", fix="drop --template or --sandbox-id")

    backend = select_backend(args.backend)
    from e2b_code_interpreter import Sandbox

    if args.sandbox_id:
        sandbox = Sandbox.connect(args.sandbox_id, timeout=args.sandbox_timeout)
        created = False
        log(f"connected to sandbox {sandbox.sandbox_id}")
    else:
        sandbox = Sandbox.create(template=args.template, timeout=args.sandbox_timeout)
        created = True
        log(f"created sandbox {sandbox.sandbox_id}")

    exit_code = EXIT_OK
    try:
        uploaded = []
        for plan in uploads:
            for local, remote in plan:
                info = sandbox.files.write(remote, local.read_bytes())
                uploaded.append({"local": str(local), "remote": info.path})

        def echo(message: Any) -> None:
            sys.stderr.write(str(message))
            sys.stderr.flush()

        execution = sandbox.run_code(
            code,
            language=args.language,
            envs=envs or None,
            timeout=args.timeout,
            on_stdout=echo if args.stream else None,
            on_stderr=echo if args.stream else None,
        )

        truncated: dict[str, int] = {}
        stdout, cut = clip("".join(execution.logs.stdout), args.max_output)
        if cut:
            truncated["stdout"] = cut
        stderr, cut = clip("".join(execution.logs.stderr), args.max_output)
        if cut:
            truncated["stderr"] = cut
        stem = f"e2b-{sandbox.sandbox_id}-{execution.execution_count or 0}"
        out_dir = OutputDir(args.output_dir)
        results = [
            save_result(r, i, stem, out_dir, args.max_output, images=not args.no_images)
            for i, r in enumerate(execution.results)
        ]
        out_dir.report()
        error = None
        if execution.error is not None:
            traceback_text, cut = clip(execution.error.traceback, args.max_output)
            if cut:
                truncated["traceback"] = cut
            error = {"name": execution.error.name, "value": execution.error.value, "traceback": traceback_text}
            exit_code = EXIT_FAILED

        downloaded = []
        for remote, local in downloads:
            try:
                data = sandbox.files.read(remote, format="bytes")
            except Exception as exc:  # a missing file is reported in the JSON, the run still counts
                code_, message, _ = describe_error(exc)
                downloaded.append({"remote": remote, "local": local, "error": message})
                if exit_code == EXIT_OK:
                    exit_code = code_ if code_ == EXIT_NOT_FOUND else EXIT_FAILED
                continue
            target = Path(local).expanduser()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(data))
            downloaded.append({"remote": remote, "local": str(target), "bytes": len(data)})

        text, cut = clip(execution.text, args.max_output)
        if cut:
            truncated["text"] = cut
        emit_json(
            {
                "sandbox_id": sandbox.sandbox_id,
                "backend": backend.kind,
                "kept": (not created) or args.keep,
                "language": args.language or "python",
                "stdout": stdout,
                "stderr": stderr,
                "text": text,
                "results": results,
                "error": error,
                "execution_count": execution.execution_count,
                "uploaded": uploaded,
                "downloaded": downloaded,
                "truncated": truncated,
            }
        )
        if error is not None:
            log(f"the code raised {error['name']}: {error['value']}")
    finally:
        if created and not args.keep:
            kill_quietly(sandbox)
        elif created:
            keep_notice(sandbox.sandbox_id)
    return exit_code


if __name__ == "__main__":
    run_main(main)
