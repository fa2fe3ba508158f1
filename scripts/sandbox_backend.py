"""Shared helpers for the E2B skill scripts: backend selection, JSON output, error mapping.

Every script in this folder imports this module. It never imports the E2B SDK at module load time, so
`--help` stays fast and works before the SDK is installed; the SDK reads its settings from the
environment when a call is made, which is why the backend is chosen (and `os.environ` filled in)
before any SDK object is created.

Backend order:

1. `--local` or `--cloud` on the command line;
2. `E2B_API_KEY` in the environment or in a `.env` file (found from the current directory upwards)
   selects E2B cloud, or whatever `E2B_API_URL` / `E2B_DOMAIN` point at;
3. otherwise e2b-local: `e2b-local env --json` is asked for the address and key of the running
   server; when it is not running, `e2b-local start` starts it in the background first.

The choice is announced in one line on stderr.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import enum
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

# Exit codes shared by every script (each script's --help repeats the ones it uses).
EXIT_OK = 0
EXIT_FAILED = 1  # the user's code raised, or the command exited non-zero
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_BACKEND = 3  # no backend, authentication or configuration problem, other API errors
EXIT_NOT_FOUND = 4  # sandbox, process or file not found (or the sandbox is gone)
EXIT_TIMEOUT = 5  # a timeout, rate limit or busy service: retrying later may help
EXIT_INTERRUPTED = 130  # Ctrl-C, the shell convention (128 + SIGINT)

EXIT_CODES_HELP = """exit codes:
  0  success
  1  the code raised an error / the command exited non-zero
  2  usage error (bad or missing arguments)
  3  backend or API error (no backend, authentication, configuration)
  4  not found (sandbox, process or file), or the sandbox is gone
  5  timeout, rate limit or busy service (retry later or raise a timeout)"""

# The variables `e2b-local env --json` prints; the SDK reads exactly these three.
LOCAL_ENV_KEYS = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")
# `e2b-local env` only reads a file and answers; 30 s is generous even on a loaded machine.
LOCAL_ENV_TIMEOUT_S = 30
# The first `e2b-local start` builds a Debian root filesystem (tens of seconds to a few minutes on a
# slow mirror); 900 s bounds a wedged start without cutting off a slow first build.
LOCAL_START_TIMEOUT_S = 900
# Set to 1 to print full tracebacks for unexpected errors (for bug reports).
DEBUG_ENV = "E2B_SCRIPTS_DEBUG"
# Where keys come from for E2B cloud; printed in the fix for a missing or rejected key.
KEYS_URL = "https://e2b.dev/dashboard?tab=keys"
# Default cap on text fields in the JSON output (characters); long output is cut with a note.
DEFAULT_MAX_OUTPUT = 20_000
# Part of a clipped text kept from its end (errors and summaries usually come last).
CLIP_TAIL_SHARE = 0.3


class ScriptError(Exception):
    """An expected failure: printed as one `error:` line and one `fix:` line, never a traceback."""

    def __init__(self, message: str, fix: str | None = None, code: int = EXIT_BACKEND) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.code = code


@dataclasses.dataclass(frozen=True)
class Backend:
    """The backend the script talks to."""

    kind: str  # "local" (e2b-local) or "cloud" (E2B cloud, self-hosted E2B, or E2B_API_URL)
    api_url: str  # where control-plane calls go, for the announcement and error messages


# --------------------------------------------------------------------------------------------------
# Output


def log(message: str) -> None:
    """Write one diagnostic line to stderr (stdout is reserved for the JSON result)."""
    print(message, file=sys.stderr, flush=True)


def _json_default(value: Any) -> Any:
    """Serialise the SDK's datetimes, enums, dataclasses and byte strings."""
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def to_jsonable(value: Any) -> Any:
    """Turn SDK objects (dataclasses, enums, datetimes) into plain JSON values."""
    return json.loads(json.dumps(value, default=_json_default))


def emit_json(payload: Any) -> None:
    """Print the result as JSON on stdout."""
    print(json.dumps(payload, indent=2, default=_json_default, ensure_ascii=False), flush=True)


def emit_json_line(payload: Any) -> None:
    """Print one compact JSON object per line (for streams of readings or events)."""
    print(json.dumps(payload, default=_json_default, ensure_ascii=False), flush=True)


def clip(text: str | None, limit: int) -> tuple[str | None, int]:
    """Shorten `text` to about `limit` characters, keeping its head and tail.

    Returns the text and how many characters were cut (0 when nothing was cut). A marker line in the
    middle says how much is missing, so a reader never mistakes clipped output for the whole.
    """
    if text is None or limit <= 0 or len(text) <= limit:
        return text, 0
    tail = int(limit * CLIP_TAIL_SHARE)
    head = limit - tail
    cut = len(text) - head - tail
    return f"{text[:head]}\n... [{cut} characters cut] ...\n{text[len(text) - tail :]}", cut


# --------------------------------------------------------------------------------------------------
# Argument helpers


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    """Add the `--local` / `--cloud` switch to a parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--local",
        dest="backend",
        action="store_const",
        const="local",
        help="use e2b-local on this machine even if E2B_API_KEY is set",
    )
    group.add_argument(
        "--cloud",
        dest="backend",
        action="store_const",
        const="cloud",
        help="use E2B cloud (needs E2B_API_KEY in the environment or .env)",
    )


def parse_pairs(items: Iterable[str] | None, what: str) -> dict[str, str]:
    """Parse repeated `KEY=VALUE` arguments into a dict; a malformed item is a usage error."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ScriptError(
                f"{what} must look like KEY=VALUE, got {item!r}",
                fix=f"write it as KEY=VALUE, for example {what} DEBUG=1",
                code=EXIT_USAGE,
            )
        result[key] = value
    return result


def make_parser(prog_doc: str, epilog: str, **kwargs: Any) -> argparse.ArgumentParser:
    """An ArgumentParser whose epilog (examples, exit codes) keeps its line breaks."""
    return argparse.ArgumentParser(
        description=prog_doc,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------------
# Backend selection


def load_env_file() -> str | None:
    """Load `.env` from the current directory or a parent into os.environ (set variables win)."""
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:
        return None
    path = find_dotenv(usecwd=True)
    if path:
        load_dotenv(path, override=False)
        return path
    return None


def _e2b_local_command() -> tuple[list[str], dict[str, str]]:
    """How to run e2b-local: the console script if installed, else `python -m e2b_local`."""
    env = dict(os.environ)
    exe = shutil.which("e2b-local")
    if exe:
        return [exe], env
    # In a checkout of the repository the package sits next to scripts/: make it importable.
    repo = Path(__file__).resolve().parent.parent
    if (repo / "e2b_local" / "__init__.py").is_file():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "e2b_local"], env


def _missing_module(stderr: str) -> str | None:
    """The module a "No module named 'X'" traceback names, if it is one."""
    # `python -m X` names a missing X bare; an import inside it, quoted.
    match = re.search(r"No module named '?([\w.]+)'?", stderr or "")
    return match.group(1) if match else None


def _not_installed_error(missing: str | None = None) -> ScriptError:
    """e2b-local absent, or present in a Python that lacks one of its packages (`missing`)."""
    repo = Path(__file__).resolve().parent.parent
    source = str(repo) if (repo / "pyproject.toml").is_file() else "a checkout of the e2b-local repository"
    if missing and missing.split(".")[0] != "e2b_local":
        return ScriptError(
            f"E2B_API_KEY is not set and e2b-local cannot run: its Python ({sys.executable}) lacks the "
            f"package {missing!r}",
            fix=(f"run this script with the Python e2b-local is installed in (e.g. {source}/.venv/bin/python), "
                 f"or install it into this one: pip install -e {source}; or set E2B_API_KEY for E2B cloud "
                 f"(keys: {KEYS_URL})"),
        )
    return ScriptError(
        "E2B_API_KEY is not set and e2b-local is not installed",
        fix=(
            f"install e2b-local to run sandboxes on this machine (bash install.sh in {source}, or "
            f"pip install -e {source}), or set E2B_API_KEY for E2B cloud (keys: {KEYS_URL})"
        ),
    )


def _run_local(args: list[str], capture: bool, timeout: int) -> subprocess.CompletedProcess[str]:
    base, env = _e2b_local_command()
    try:
        if capture:
            return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        # `start` may print progress (a first start builds the root filesystem): show it on
        # stderr, keeping stdout for this script's JSON.
        try:
            err_fd: Any = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            err_fd = subprocess.PIPE
        proc = subprocess.run(
            base + args, stdout=err_fd, stderr=err_fd, text=True, timeout=timeout, env=env, check=False
        )
        for stream in (proc.stdout, proc.stderr):
            if stream:
                sys.stderr.write(stream)
        return proc
    except FileNotFoundError as exc:
        raise _not_installed_error() from exc
    except subprocess.TimeoutExpired as exc:
        raise ScriptError(
            f"`e2b-local {' '.join(args)}` did not finish within {timeout} s",
            fix="check `e2b-local status` and its log in the data directory, then retry",
            code=EXIT_TIMEOUT,
        ) from exc


def _local_env() -> dict[str, str] | None:
    """The running server's variables, or None when it is not running."""
    proc = _run_local(["env", "--json"], capture=True, timeout=LOCAL_ENV_TIMEOUT_S)
    if proc.returncode != 0:
        missing = _missing_module(proc.stderr or "")
        if missing is not None:
            raise _not_installed_error(missing)
        return None
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in LOCAL_ENV_KEYS):
        return None
    return {k: data[k] for k in LOCAL_ENV_KEYS}


def _use_local() -> Backend:
    started = False
    values = _local_env()
    if values is None:
        log("e2b-local is not running: starting it in the background (e2b-local start) ...")
        proc = _run_local(["start"], capture=False, timeout=LOCAL_START_TIMEOUT_S)
        if proc.returncode != 0:
            raise ScriptError(
                f"`e2b-local start` failed with exit code {proc.returncode}",
                fix="run `e2b-local serve` in a terminal to see why, or set E2B_API_KEY for E2B cloud",
            )
        started = True
        values = _local_env()
        if values is None:
            raise ScriptError(
                "e2b-local started but `e2b-local env --json` gave no usable answer",
                fix="check `e2b-local status`; restart it with `e2b-local stop && e2b-local start`",
            )
    os.environ.update(values)
    how = "started it in the background" if started else "already running"
    log(f"backend: e2b-local at {values['E2B_API_URL']} ({how})")
    return Backend(kind="local", api_url=values["E2B_API_URL"])


def _use_cloud(explicit: bool) -> Backend:
    if not os.environ.get("E2B_API_KEY"):
        raise ScriptError(
            "--cloud needs E2B_API_KEY, which is not set" if explicit else "E2B_API_KEY is not set",
            fix=f"export E2B_API_KEY=e2b_... or put it in a .env file (keys: {KEYS_URL}); "
            "or drop --cloud to use e2b-local",
        )
    api_url = os.environ.get("E2B_API_URL") or f"https://api.{os.environ.get('E2B_DOMAIN') or 'e2b.app'}"
    if os.environ.get("E2B_API_URL"):
        log(f"backend: E2B API at {api_url} (from E2B_API_URL)")
    else:
        log(f"backend: E2B cloud ({api_url})")
    return Backend(kind="cloud", api_url=api_url)


def select_backend(preference: str | None) -> Backend:
    """Choose the backend, fill os.environ for the SDK, and announce the choice on stderr."""
    load_env_file()
    if preference == "local":
        return _use_local()
    if preference == "cloud":
        return _use_cloud(explicit=True)
    if os.environ.get("E2B_API_KEY"):
        return _use_cloud(explicit=False)
    return _use_local()


# --------------------------------------------------------------------------------------------------
# Error mapping


def describe_error(exc: BaseException) -> tuple[int, str, str | None]:
    """Map an exception to (exit code, one-line message, fix)."""
    if isinstance(exc, ScriptError):
        return exc.code, exc.message, exc.fix
    try:
        import e2b
    except ImportError:
        e2b = None  # type: ignore[assignment]
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if e2b is not None:
        if isinstance(exc, e2b.AuthenticationException):
            return (
                EXIT_BACKEND,
                f"authentication failed: {first_line}",
                f"check E2B_API_KEY (keys: {KEYS_URL}); for e2b-local unset it or use --local",
            )
        if isinstance(exc, e2b.SandboxNotFoundException):
            return (
                EXIT_NOT_FOUND,
                f"sandbox not found: {first_line}",
                "list sandboxes with `python scripts/lifecycle.py list`; a sandbox is killed when its "
                "timeout passes (300 s unless set)",
            )
        if isinstance(exc, e2b.SandboxNotRunningException):
            return (
                EXIT_NOT_FOUND,
                f"the sandbox is not running any more: {first_line}",
                "it was killed or reached its timeout: create a new one (and pass a longer timeout)",
            )
        if isinstance(exc, e2b.FileNotFoundException):
            return (
                EXIT_NOT_FOUND,
                f"file not found: {first_line}",
                "check the path with `python scripts/files.py list SANDBOX_ID DIR`",
            )
        if isinstance(exc, e2b.NotFoundException):
            return EXIT_NOT_FOUND, f"not found: {first_line}", None
        if isinstance(exc, e2b.RateLimitException):
            return EXIT_TIMEOUT, f"rate limited: {first_line}", "wait a little and retry"
        if isinstance(exc, e2b.ServiceBusyException):
            return EXIT_TIMEOUT, f"service busy: {first_line}", "nothing changed; retry in a few seconds"
        if isinstance(exc, e2b.SandboxUnreachableException):
            return (
                EXIT_TIMEOUT,
                f"the sandbox could not be reached: {first_line}",
                "check its state with `python scripts/lifecycle.py info SANDBOX_ID`, then retry",
            )
        if isinstance(exc, e2b.TimeoutException):
            return (
                EXIT_TIMEOUT,
                f"timed out: {first_line}",
                "raise --timeout (0 means no limit) or the sandbox timeout, or split the work",
            )
        if isinstance(exc, e2b.GuestUnresponsiveException):
            return (
                EXIT_BACKEND,
                f"the paused sandbox cannot be restored: {first_line}",
                "resume it with a reboot: python scripts/lifecycle.py resume SANDBOX_ID --reboot",
            )
        if isinstance(exc, e2b.InvalidArgumentException):
            return EXIT_USAGE, f"invalid argument: {first_line}", None
        if isinstance(exc, e2b.TemplateException):
            return EXIT_BACKEND, f"template problem: {first_line}", "use another template or rebuild it"
        if isinstance(exc, e2b.SandboxException):
            return EXIT_BACKEND, f"E2B error: {first_line}", None
    try:
        import httpx
    except ImportError:
        httpx = None  # type: ignore[assignment]
    if httpx is not None and isinstance(exc, httpx.TimeoutException):
        return EXIT_TIMEOUT, f"request timed out: {first_line}", "retry; check the network or the server load"
    if (httpx is not None and isinstance(exc, httpx.TransportError)) or isinstance(exc, ConnectionError | OSError):
        return (
            EXIT_BACKEND,
            f"cannot reach the E2B API ({type(exc).__name__}: {first_line})",
            "for e2b-local check `e2b-local status`; for E2B cloud check the network and E2B_DOMAIN",
        )
    return EXIT_BACKEND, f"unexpected {type(exc).__name__}: {first_line}", f"set {DEBUG_ENV}=1 for a traceback"


def report_error(exc: BaseException) -> int:
    """Print an error as `error:` and `fix:` lines on stderr and return its exit code."""
    code, message, fix = describe_error(exc)
    log(f"error: {message}")
    if fix:
        log(f"fix: {fix}")
    if os.environ.get(DEBUG_ENV) == "1" and not isinstance(exc, ScriptError):
        traceback.print_exception(exc, file=sys.stderr)
    return code


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> NoReturn:
    """Run a script's main function and exit with its code; expected failures never show tracebacks."""
    try:
        code = main(argv)
    except KeyboardInterrupt:
        log("interrupted")
        code = EXIT_INTERRUPTED
    except Exception as exc:  # every failure becomes one clear line
        code = report_error(exc)
    sys.exit(code)


# --------------------------------------------------------------------------------------------------
# Sandbox helpers


def kill_quietly(sandbox: Any) -> None:
    """Kill a sandbox the script created; a failure here is reported but does not change the result."""
    try:
        sandbox.kill()
        log(f"killed sandbox {sandbox.sandbox_id}")
    except Exception as exc:  # cleanup must not hide the real result
        log(f"warning: could not kill sandbox {sandbox.sandbox_id}: {exc}")


def keep_notice(sandbox_id: str) -> None:
    """Tell the user how to reach and remove a sandbox that was left running."""
    log(
        f"sandbox {sandbox_id} left running: reuse it with --sandbox-id {sandbox_id}; "
        f"remove it with: python scripts/lifecycle.py kill {sandbox_id}"
    )


def split_pair(value: str, flag: str, remote_first: bool) -> tuple[str, str]:
    """Split `LOCAL:REMOTE` / `REMOTE:LOCAL` at the colon nearest the remote side.

    Sandbox paths rarely contain colons, so the remote part is taken as colon-free: a local path
    with a colon still works.
    """
    left, sep, right = value.partition(":") if remote_first else value.rpartition(":")
    if not sep or not left or not right:
        order = "REMOTE:LOCAL" if remote_first else "LOCAL:REMOTE"
        fail(f"{flag} must look like {order}, got {value!r}", fix=f"for example {flag} {_PAIR_EXAMPLES[flag]}")
    return left, right


# Examples shown when a path pair is malformed.
_PAIR_EXAMPLES = {
    "--upload": "data.csv:/home/user/data.csv",
    "--download": "/home/user/out.png:out.png",
}


def upload_plan(local: str, remote: str) -> list[tuple[Path, str]]:
    """List (local file, sandbox path) pairs for a file or a whole directory; check they exist."""
    src = Path(local).expanduser()
    if src.is_file():
        return [(src, remote)]
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file())
        return [(p, f"{remote.rstrip('/')}/{p.relative_to(src).as_posix()}") for p in files]
    fail(f"local path {local!r} does not exist", fix="check the path (relative paths start from the current directory)")


def fail(message: str, fix: str | None = None, code: int = EXIT_USAGE) -> NoReturn:
    """Raise an expected failure (usage errors by default)."""
    raise ScriptError(message, fix=fix, code=code)


# --------------------------------------------------------------------------------------------------
# Running a helper module by mistake

# What `--help` of a helper module says: where to go instead.
HELPER_EPILOG = """This file is a helper module that the scripts import; it does nothing on its own.
Run one of these instead (each has --help with examples):
  python scripts/run_code.py      run code and get stdout, values, charts and errors as JSON
  python scripts/commands.py      shell commands, background processes
  python scripts/files.py         move files and folders in and out
  python scripts/lifecycle.py     create, list, pause, resume, kill sandboxes
  python scripts/metrics.py       CPU, memory and disk use

exit codes:
  0  --help
  2  run without --help (there is nothing to do)"""


def helper_main(doc: str | None, argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of a helper module run as a script: `--help` explains it, anything else exits 2."""
    parser = make_parser(doc, HELPER_EPILOG)
    parser.parse_args(argv)
    sys.exit(
        report_error(
            ScriptError(
                "this is a helper module of the E2B scripts, not a command",
                fix="run python scripts/run_code.py --help (or another script listed by --help)",
                code=EXIT_USAGE,
            )
        )
    )


if __name__ == "__main__":
    helper_main(__doc__)
