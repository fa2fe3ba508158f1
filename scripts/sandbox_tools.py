"""Sandbox tools for a language model: their definitions and what they do, in one module.

`claude_agent.py` (a tool-use loop over the Anthropic Messages API) and `mcp_server.py` (an MCP server)
both import this module, so the tools a model is shown and the code that runs them cannot drift apart.
Not a command-line script: run `python scripts/claude_agent.py --print-tools` to see the definitions.

Five tools act on one code-interpreter sandbox: `run_code`, `run_command`, `write_file`, `read_file`
and `list_files`. Each call gives a `ToolOutcome`: a JSON payload (long text clipped with a note),
images (charts from `run_code`, image files from `read_file`), and `is_error` when the code raised,
the command failed or the request was wrong, so the model can correct itself. Failures that make
the sandbox unusable (it is gone, the backend refuses us) are raised instead: there is nothing for
the model to fix.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import posixpath
from typing import Any

from sandbox_backend import Backend, clip, describe_error, keep_notice, kill_quietly, log, select_backend, to_jsonable

# Cap on each text field of a tool result (characters). Everything sent back is read by the model
# on every later turn, so this is lower than the scripts' JSON cap; clipped text says how much is cut.
TOOL_MAX_OUTPUT = 8_000
# Time limit of one run_code cell or foreground command (seconds): the SDK's run_code default, and
# room for a pip install, which the 60 s command default often cuts off.
TOOL_TIMEOUT_S = 300.0
# At most this many images per result: a cell that draws dozens of figures must not flood the context.
MAX_IMAGES = 5
# The Messages API refuses images larger than 5 MB; bigger ones are left out with a note.
MAX_IMAGE_BYTES = 5 * 1024 * 1024
# read_file refuses files larger than this (bytes): the text would be clipped to TOOL_MAX_OUTPUT
# anyway, and reading a huge file through the API only costs time.
MAX_READ_BYTES = 10 * 1024 * 1024
# list_files returns at most this many entries; deeper listings of big trees are cut with a note.
MAX_LIST_ENTRIES = 300
# list_files never descends further than this many levels below the path.
MAX_LIST_DEPTH = 5
# Languages of run_code: the ones every code-interpreter sandbox has (E2B cloud and e2b-local).
LANGUAGES = ("python", "javascript", "typescript", "bash")
# Image MIME types by file extension, for read_file on an image.
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}
# Result fields of run_code that carry images, and their MIME types.
RESULT_IMAGE_FIELDS = {"png": "image/png", "jpeg": "image/jpeg"}
# Where relative paths start, as in the SDK.
HOME = "/home/user"

TOOLS: list[dict[str, Any]] = [
    {
        "name": "run_code",
        "description": (
            "Run a code cell in the sandbox's interpreter (a Jupyter kernel). Variables, imports and "
            "functions persist between calls of the same language, like cells of a notebook. Returns JSON "
            "with stdout, stderr, result (the value of the last expression, as text), error (name, value and "
            "traceback when the code raised) and other displayed outputs; charts shown with plt.show() or "
            "displayed as the last expression come back as images. Python has numpy, pandas and matplotlib; "
            "install more with run_command (pip install ...). Files live under /home/user, the working "
            f"directory. A cell stops after {int(TOOL_TIMEOUT_S)} seconds by default."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "The code to run."},
                "language": {
                    "type": "string",
                    "enum": list(LANGUAGES),
                    "description": "Language of the code (default python).",
                },
            },
            "required": ["code"],
        },
    },
    {
        "name": "run_command",
        "description": (
            "Run a shell command with bash in the sandbox, as the user 'user' in /home/user. Every call "
            "starts a fresh shell, so cd and export do not carry over: chain steps with && instead. Returns "
            "JSON with exit_code, stdout and stderr; a non-zero exit code is reported as an error. With "
            "background set, the command keeps running (a server, a long job) and the call returns its pid "
            "at once; redirect its output to a file to read it later."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command line, run with bash -c."},
                "background": {
                    "type": "boolean",
                    "description": "Start it in the background and return its pid without waiting (default false).",
                },
            },
            "required": ["command"],
        },
    },
    {
        "name": "write_file",
        "description": (
            "Create or overwrite a text file in the sandbox; missing parent folders are created. Relative "
            "paths start at /home/user."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Where to write, e.g. /home/user/data.csv."},
                "content": {"type": "string", "description": "The whole content of the file."},
            },
            "required": ["path", "content"],
        },
    },
    {
        "name": "read_file",
        "description": (
            "Read a file from the sandbox. Text comes back as text (long files are cut in the middle, with a "
            "note); PNG, JPEG, GIF and WebP files come back as images. Relative paths start at /home/user."
        ),
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "The file to read."}},
            "required": ["path"],
        },
    },
    {
        "name": "list_files",
        "description": (
            "List a folder of the sandbox: name, type (file or dir), size in bytes and path of each entry."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "The folder to list (default /home/user)."},
                "depth": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_LIST_DEPTH,
                    "description": "How many levels to descend (default 1: only the folder itself).",
                },
            },
            "required": [],
        },
    },
]

# The names of the tools above, for dispatching and for checks.
TOOL_NAMES = tuple(tool["name"] for tool in TOOLS)


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    """--timeout and --max-output, shared by every program that runs these tools."""
    parser.add_argument(
        "--timeout",
        type=float,
        default=TOOL_TIMEOUT_S,
        metavar="SECONDS",
        help=f"limit of one code cell or foreground command (default {TOOL_TIMEOUT_S:g}; 0 = none)",
    )
    parser.add_argument(
        "--max-output",
        type=int,
        default=TOOL_MAX_OUTPUT,
        metavar="CHARS",
        help=f"clip each text field of a tool result to about this many characters (default {TOOL_MAX_OUTPUT})",
    )


def tool_definitions() -> list[dict[str, Any]]:
    """The tool definitions in the Messages API format (a fresh copy the caller may change)."""
    return copy.deepcopy(TOOLS)


@dataclasses.dataclass
class Image:
    """One image for the model: its MIME type and base64 data."""

    media_type: str
    data: str


@dataclasses.dataclass
class ToolOutcome:
    """What one tool call produced."""

    payload: dict[str, Any]
    images: list[Image] = dataclasses.field(default_factory=list)
    is_error: bool = False

    def text(self) -> str:
        """The payload as compact JSON, the text the model reads."""
        return json.dumps(self.payload, ensure_ascii=False)

    def to_anthropic(self, tool_use_id: str) -> dict[str, Any]:
        """The `tool_result` block answering one `tool_use` block of the Messages API."""
        content: list[dict[str, Any]] = [{"type": "text", "text": self.text()}]
        content += [
            {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}}
            for image in self.images
        ]
        return {"type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": self.is_error}

    def summary(self) -> str:
        """One line for a progress log."""
        payload = self.payload
        parts = []
        error = payload.get("error")
        if isinstance(error, dict):
            parts.append(f"{error.get('name')}: {error.get('value')}")
        elif "exit_code" in payload:  # a command's error only repeats its exit code
            parts.append(f"exit code {payload['exit_code']}")
        elif error:
            parts.append(str(error))
        if "pid" in payload:
            parts.append(f"pid {payload['pid']}")
        for field in ("stdout", "stderr", "content"):
            if payload.get(field):
                parts.append(f"{field} {len(payload[field])} chars")
        if payload.get("result") is not None:
            parts.append(f"result {_one_line(str(payload['result']), 60)}")
        if "entries" in payload:
            parts.append(f"{len(payload['entries'])} entries")
        if "bytes" in payload:
            parts.append(f"{payload['bytes']} bytes")
        if self.images:
            parts.append(f"{len(self.images)} image(s)")
        return ("error: " if self.is_error else "ok: ") + (", ".join(parts) or "no output")


def failure(message: str, **extra: Any) -> ToolOutcome:
    """An outcome that tells the model its request failed, and why."""
    return ToolOutcome({"error": message, **extra}, is_error=True)


def describe_call(name: str, arguments: dict[str, Any]) -> str:
    """A short description of a tool call for a progress log."""
    if name == "run_code":
        language = arguments.get("language") or "python"
        return f"run_code ({language}): {_one_line(str(arguments.get('code', '')), 100)}"
    if name == "run_command":
        how = " (background)" if arguments.get("background") else ""
        return f"run_command{how}: {_one_line(str(arguments.get('command', '')), 100)}"
    if name == "write_file":
        return f"write_file {arguments.get('path')} ({len(str(arguments.get('content', '')))} chars)"
    if name in ("read_file", "list_files"):
        return f"{name} {arguments.get('path') or HOME}"
    return name


def _one_line(text: str, limit: int) -> str:
    """The first line of `text`, shortened to `limit` characters, marking what was left out."""
    lines = text.strip().splitlines() or [""]
    first = lines[0]
    more = len(lines) > 1
    if len(first) > limit:
        first, more = first[: limit - 3], True
    return first + (" ..." if more else "")


# --------------------------------------------------------------------------------------------------
# Execution


@dataclasses.dataclass(frozen=True)
class Limits:
    """Limits applied to every tool call."""

    max_output: int = TOOL_MAX_OUTPUT
    timeout: float = TOOL_TIMEOUT_S


def execute(sandbox: Any, name: str, arguments: dict[str, Any] | None, limits: Limits | None = None) -> ToolOutcome:
    """Run one tool call in `sandbox` (an `e2b_code_interpreter.Sandbox`).

    Mistakes of the model (unknown tool, missing argument) and failures of the call itself (the code
    raised, the command exited non-zero, a file is missing, a timeout) come back as an outcome with
    `is_error`. Exceptions that mean the sandbox or the backend is unusable propagate.
    """
    limits = limits or Limits()
    arguments = arguments or {}
    handler = _HANDLERS.get(name)
    if handler is None:
        return failure(f"unknown tool {name!r}; the tools are {', '.join(TOOL_NAMES)}")
    problem = _check_arguments(name, arguments)
    if problem:
        return failure(problem)
    try:
        return handler(sandbox, arguments, limits)
    except Exception as exc:
        if is_fatal(exc):
            raise
        _, message, _ = describe_error(exc)
        return failure(message)


def is_fatal(exc: BaseException) -> bool:
    """True for errors that make the sandbox unusable: the caller must stop rather than tell the model."""
    import e2b

    if isinstance(
        exc,
        e2b.SandboxNotFoundException
        | e2b.SandboxNotRunningException
        | e2b.SandboxUnreachableException
        | e2b.GuestUnresponsiveException
        | e2b.RateLimitException,
    ):
        return True
    # Other SDK errors concern this one call (missing file, bad argument, timeout): the model can
    # react to them. Anything else (authentication, the network, a bug) is not the model's business.
    return not isinstance(exc, e2b.SandboxException)


def _check_arguments(name: str, arguments: dict[str, Any]) -> str | None:
    """A message when the arguments do not match the tool's schema, else None."""
    schema = next(tool["input_schema"] for tool in TOOLS if tool["name"] == name)
    for key in schema["required"]:
        if key not in arguments:
            return f"{name} needs the argument {key!r}"
    for key, value in arguments.items():
        spec = schema["properties"].get(key)
        if spec is None:
            return f"{name} has no argument {key!r}; it takes {', '.join(schema['properties'])}"
        expected = {"string": str, "boolean": bool, "integer": int}[spec["type"]]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            return f"{name}: {key!r} must be a {spec['type']}"
        if "enum" in spec and value not in spec["enum"]:
            return f"{name}: {key!r} must be one of {', '.join(spec['enum'])}"
        if "minimum" in spec and not spec["minimum"] <= value <= spec["maximum"]:
            return f"{name}: {key!r} must be between {spec['minimum']} and {spec['maximum']}"
    return None


def _clipped(payload: dict[str, Any], field: str, text: str | None, limit: int) -> None:
    """Store `text` in `payload[field]`, clipped, recording the cut under `truncated`."""
    payload[field], cut = clip(text, limit)
    if cut:
        payload.setdefault("truncated", {})[field] = cut


def _collect_images(results: list[Any], payload: dict[str, Any]) -> list[Image]:
    """Images of rich results, within MAX_IMAGES and MAX_IMAGE_BYTES; what is left out is noted."""
    images: list[Image] = []
    skipped = 0
    for result in results:
        for field, media_type in RESULT_IMAGE_FIELDS.items():
            data = getattr(result, field, None)
            if not data:
                continue
            # Base64 grows data by a third; the API limit applies to the decoded image.
            if len(images) >= MAX_IMAGES or len(data) * 3 // 4 > MAX_IMAGE_BYTES:
                skipped += 1
            else:
                images.append(Image(media_type, data))
            break  # one image per result: png and jpeg of one figure are the same picture
    if images:
        payload["images"] = len(images)
    if skipped:
        payload["images_left_out"] = skipped
    return images


def _run_code(sandbox: Any, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
    execution = sandbox.run_code(arguments["code"], language=arguments.get("language"), timeout=limits.timeout)
    payload: dict[str, Any] = {}
    _clipped(payload, "stdout", "".join(execution.logs.stdout), limits.max_output)
    _clipped(payload, "stderr", "".join(execution.logs.stderr), limits.max_output)
    _clipped(payload, "result", execution.text, limits.max_output)
    displays = []
    for result in execution.results:
        if result.is_main_result:
            continue
        entry: dict[str, Any] = {"formats": list(result.formats())}
        if result.text:
            entry["text"], _ = clip(result.text, limits.max_output)
        displays.append(entry)
    if displays:
        payload["displays"] = displays
    images = _collect_images(list(execution.results), payload)
    error = execution.error
    if error is None:
        payload["error"] = None
    else:
        traceback, cut = clip(error.traceback, limits.max_output)
        payload["error"] = {"name": error.name, "value": error.value, "traceback": traceback}
        if cut:
            payload.setdefault("truncated", {})["traceback"] = cut
    return ToolOutcome(payload, images, is_error=error is not None)


def _run_command(sandbox: Any, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
    from e2b import CommandExitException

    command = arguments["command"]
    if arguments.get("background"):
        # No time limit: a background process is usually a server meant to outlive this call.
        handle = sandbox.commands.run(command, background=True, timeout=0)
        handle.disconnect()  # stop streaming its output here; the process keeps running
        return ToolOutcome({"pid": handle.pid, "background": True})
    try:
        result = sandbox.commands.run(command, timeout=limits.timeout)
        exit_code, stdout, stderr, error = result.exit_code, result.stdout, result.stderr, None
    except CommandExitException as exc:
        exit_code, stdout, stderr, error = exc.exit_code, exc.stdout, exc.stderr, exc.error
    payload: dict[str, Any] = {"exit_code": exit_code}
    _clipped(payload, "stdout", stdout, limits.max_output)
    _clipped(payload, "stderr", stderr, limits.max_output)
    if error:
        payload["error"] = error
    return ToolOutcome(payload, is_error=exit_code != 0)


def _absolute(path: str) -> str:
    """A sandbox path made absolute against /home/user, so results always show full paths."""
    return posixpath.normpath(posixpath.join(HOME, path))


def _write_file(sandbox: Any, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
    data = arguments["content"].encode()
    info = sandbox.files.write(_absolute(arguments["path"]), data)
    return ToolOutcome({"path": info.path, "bytes": len(data)})


def _read_file(sandbox: Any, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
    import base64

    path = _absolute(arguments["path"])
    info = sandbox.files.get_info(path)
    if to_jsonable(info.type) != "file":
        return failure(f"{path} is a {to_jsonable(info.type)}, not a file; use list_files for folders")
    if info.size > MAX_READ_BYTES:
        return failure(
            f"{path} has {info.size} bytes, more than read_file returns ({MAX_READ_BYTES}); "
            "look at parts of it with run_command (head, tail, grep) or run_code"
        )
    media_type = IMAGE_TYPES.get(posixpath.splitext(path)[1].lower())
    data = bytes(sandbox.files.read(path, format="bytes"))
    if media_type:
        if len(data) > MAX_IMAGE_BYTES:
            return failure(f"{path} has {len(data)} bytes, more than an image may have ({MAX_IMAGE_BYTES})")
        return ToolOutcome({"path": path, "bytes": len(data), "images": 1},
                           [Image(media_type, base64.b64encode(data).decode("ascii"))])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return failure(
            f"{path} is binary ({len(data)} bytes), not UTF-8 text; inspect it with run_code or run_command",
            path=path,
        )
    payload: dict[str, Any] = {"path": path, "bytes": len(data)}
    _clipped(payload, "content", text, limits.max_output)
    return ToolOutcome(payload)


def _list_files(sandbox: Any, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
    path = _absolute(arguments.get("path") or HOME)
    entries = sandbox.files.list(path, depth=arguments.get("depth", 1))
    listed = [
        {"name": e.name, "type": to_jsonable(e.type), "size": e.size, "path": e.path}
        for e in sorted(entries, key=lambda e: e.path)
    ]
    payload: dict[str, Any] = {"path": path, "entries": listed[:MAX_LIST_ENTRIES]}
    if len(listed) > MAX_LIST_ENTRIES:
        payload["entries_left_out"] = len(listed) - MAX_LIST_ENTRIES
    return ToolOutcome(payload)


# Tool name -> implementation; the names match TOOLS.
_HANDLERS = {
    "run_code": _run_code,
    "run_command": _run_command,
    "write_file": _write_file,
    "read_file": _read_file,
    "list_files": _list_files,
}


# --------------------------------------------------------------------------------------------------
# The sandbox of a tool session


class SandboxSession:
    """The sandbox a tool session works in: connected by ID, or created on first use.

    Creating it lazily means a run that never calls a tool (or fails before, e.g. on a bad API key)
    never starts a sandbox. Only a sandbox this session created is killed by `close`.
    """

    def __init__(
        self,
        preference: str | None,
        sandbox_id: str | None = None,
        timeout: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.preference = preference
        self.requested_id = sandbox_id
        self.timeout = timeout
        self.metadata = metadata
        self.backend: Backend | None = None
        self.sandbox: Any = None
        self.created = False

    @property
    def sandbox_id(self) -> str | None:
        """The ID of the sandbox in use, or None before the first use."""
        return self.sandbox.sandbox_id if self.sandbox is not None else self.requested_id

    def get(self) -> Any:
        """The sandbox, choosing the backend and creating or connecting it on the first call."""
        if self.sandbox is not None:
            return self.sandbox
        if self.backend is None:
            self.backend = select_backend(self.preference)
        from e2b_code_interpreter import Sandbox

        if self.requested_id:
            self.sandbox = Sandbox.connect(self.requested_id, timeout=self.timeout)
            log(f"connected to sandbox {self.sandbox.sandbox_id}")
        else:
            self.sandbox = Sandbox.create(timeout=self.timeout, metadata=self.metadata)
            self.created = True
            log(f"created sandbox {self.sandbox.sandbox_id}")
        return self.sandbox

    def close(self, keep: bool) -> None:
        """Kill the sandbox if this session created it, unless `keep`; then say how to reach a kept one."""
        if self.sandbox is None or not self.created:
            return
        if keep:
            keep_notice(self.sandbox.sandbox_id)
        else:
            kill_quietly(self.sandbox)


if __name__ == "__main__":
    from sandbox_backend import helper_main

    helper_main(__doc__)
