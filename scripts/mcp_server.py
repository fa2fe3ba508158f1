#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = ["e2b-code-interpreter==2.11.5", "e2b==2.63.0", "python-dotenv>=1.0", "mcp>=2.0"]
# ///
"""An MCP server (stdio) that gives MCP clients E2B sandboxes: Claude Code, Claude Desktop and others.

Tools: run_code, run_command, write_file, read_file, list_files (the same tools as claude_agent.py),
plus create_sandbox and kill_sandbox. Every tool takes an optional sandbox_id; without one it works in
a default sandbox, created on first use. Sandboxes this server created are killed when it exits (the
client closes the connection or sends SIGTERM); sandboxes it only connected to are left alone.
"""

from __future__ import annotations

import copy
import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from sandbox_backend import (
    EXIT_BACKEND,
    EXIT_CODES_HELP,
    EXIT_OK,
    Backend,
    add_backend_args,
    describe_error,
    fail,
    kill_quietly,
    log,
    make_parser,
    run_main,
    select_backend,
)
from sandbox_tools import TOOLS, Limits, ToolOutcome, add_limit_args, describe_call, execute, failure

# Name the server reports to clients.
SERVER_NAME = "e2b-sandbox"
# Lifetime of a sandbox this server creates (seconds). E2B's Hobby plan allows one hour at most; an
# expired default sandbox is replaced on the next call, and the model is told its state is gone.
DEFAULT_SANDBOX_TIMEOUT_S = 3600
# Tag on sandboxes this server creates, so `lifecycle.py list --metadata created-by=mcp_server` finds them.
SANDBOX_METADATA = {"created-by": "mcp_server"}

# Shown to the client when it connects; clients pass it on to the model.
INSTRUCTIONS = """Tools to run code in E2B sandboxes: disposable, isolated Linux machines. Without a \
sandbox_id the tools share one default sandbox, created on first use, whose files and interpreter state \
persist between calls. Use create_sandbox for a separate, fresh sandbox and pass its sandbox_id; kill it \
with kill_sandbox when done. Paths start at /home/user."""

# Added to each sandbox tool's input schema.
SANDBOX_ID_PROPERTY = {
    "type": "string",
    "description": "Sandbox to use (from create_sandbox); omit it to use the default sandbox.",
}

# The two tools that only exist in the MCP server.
LIFECYCLE_TOOLS: list[dict[str, Any]] = [
    {
        "name": "create_sandbox",
        "description": (
            "Create a new, empty sandbox and return its sandbox_id; pass that to the other tools to work in "
            "it. It is killed when this server stops, or earlier with kill_sandbox."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "timeout": {
                    "type": "integer",
                    "minimum": 1,
                    "description": f"Lifetime in seconds (default {DEFAULT_SANDBOX_TIMEOUT_S}).",
                },
            },
            "required": [],
        },
    },
    {
        "name": "kill_sandbox",
        "description": (
            "Kill a sandbox and everything in it. Without sandbox_id, kills the default sandbox; the next "
            "call without sandbox_id starts a fresh one. A sandbox this server did not create may belong to "
            "someone else: killing it needs confirm set to true."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "sandbox_id": {"type": "string", "description": "The sandbox to kill."},
                "confirm": {
                    "type": "boolean",
                    "description": "Required (true) to kill a sandbox this server did not create.",
                },
            },
            "required": [],
        },
    },
]

EPILOG = f"""examples:
  python scripts/mcp_server.py                      # stdio; an MCP client starts it, not a person
  claude mcp add e2b -- python /abs/path/scripts/mcp_server.py          # register with Claude Code
  claude mcp add e2b -e E2B_API_KEY=e2b_... -- python /abs/path/scripts/mcp_server.py --cloud
  python scripts/mcp_server.py --list-tools         # print the tool definitions as JSON and exit

Claude Desktop (claude_desktop_config.json):
  {{"mcpServers": {{"e2b": {{"command": "python", "args": ["/abs/path/scripts/mcp_server.py"]}}}}}}

tools: run_code, run_command, write_file, read_file, list_files (each with an optional sandbox_id),
create_sandbox, kill_sandbox. Results are JSON text (long output clipped with a note) plus images;
failed code or commands come back with isError set.

{EXIT_CODES_HELP}
  (the server itself exits 0 when the client disconnects; backend errors are reported to the client
   as tool errors, and logged on stderr)"""


def tool_definitions() -> list[dict[str, Any]]:
    """Every tool of the server: the shared sandbox tools with a sandbox_id, then create/kill."""
    tools = copy.deepcopy(TOOLS)
    for tool in tools:
        tool["input_schema"]["properties"]["sandbox_id"] = dict(SANDBOX_ID_PROPERTY)
    return tools + copy.deepcopy(LIFECYCLE_TOOLS)


def parse_args(argv: Sequence[str] | None) -> Any:
    """Parse the command line."""
    parser = make_parser(__doc__, EPILOG)
    parser.add_argument(
        "--sandbox-timeout",
        type=int,
        default=DEFAULT_SANDBOX_TIMEOUT_S,
        metavar="SECONDS",
        help=f"lifetime of the sandboxes this server creates (default {DEFAULT_SANDBOX_TIMEOUT_S})",
    )
    add_limit_args(parser)
    parser.add_argument("--list-tools", action="store_true", help="print the tool definitions as JSON and exit")
    add_backend_args(parser)
    return parser.parse_args(argv)


class SandboxPool:
    """The sandboxes of one server: a lazily created default, others created or reached by ID.

    Tool calls run in worker threads, possibly several at once, so every change happens under a lock.
    """

    def __init__(self, preference: str | None, timeout: int) -> None:
        self.preference = preference
        self.timeout = timeout
        self.backend: Backend | None = None
        self.default_id: str | None = None
        self.created: dict[str, Any] = {}  # killed when the server exits
        self.connected: dict[str, Any] = {}  # reached by ID; never killed unless asked
        self.lock = threading.Lock()

    def _ensure_backend(self) -> None:
        if self.backend is None:
            self.backend = select_backend(self.preference)

    def create(self, timeout: int | None = None) -> Any:
        """Create a sandbox; it is killed when the server exits."""
        with self.lock:
            self._ensure_backend()
        from e2b_code_interpreter import Sandbox

        sandbox = Sandbox.create(timeout=timeout or self.timeout, metadata=SANDBOX_METADATA)
        with self.lock:
            self.created[sandbox.sandbox_id] = sandbox
        log(f"created sandbox {sandbox.sandbox_id}")
        return sandbox

    def resolve(self, sandbox_id: str | None) -> Any:
        """The sandbox with this ID (connecting to it if needed), or the default one."""
        if sandbox_id is None:
            with self.lock:
                default = self.created.get(self.default_id) if self.default_id else None
                if default is None:
                    self._ensure_backend()
                    from e2b_code_interpreter import Sandbox

                    # Created under the lock: concurrent first calls must share one default sandbox.
                    default = Sandbox.create(timeout=self.timeout, metadata=SANDBOX_METADATA)
                    self.created[default.sandbox_id] = default
                    self.default_id = default.sandbox_id
                    log(f"created default sandbox {default.sandbox_id}")
                return default
        with self.lock:
            known = self.created.get(sandbox_id) or self.connected.get(sandbox_id)
            if known is not None:
                return known
            self._ensure_backend()
        from e2b_code_interpreter import Sandbox

        sandbox = Sandbox.connect(sandbox_id)
        with self.lock:
            self.connected[sandbox_id] = sandbox
        log(f"connected to sandbox {sandbox_id}")
        return sandbox

    def forget(self, sandbox_id: str) -> None:
        """Drop a sandbox that is gone, so the next default call starts a new one."""
        with self.lock:
            self.created.pop(sandbox_id, None)
            self.connected.pop(sandbox_id, None)
            if self.default_id == sandbox_id:
                self.default_id = None

    def owns(self, sandbox_id: str) -> bool:
        """Whether this server created the sandbox (its own sandboxes may be killed without confirmation)."""
        with self.lock:
            return sandbox_id in self.created

    def kill(self, sandbox_id: str | None) -> bool:
        """Kill a sandbox (the default one without an ID); False when there was none to kill."""
        with self.lock:
            sandbox_id = sandbox_id or self.default_id
            if sandbox_id is None:
                return False
            known = self.created.get(sandbox_id) or self.connected.get(sandbox_id)
            self._ensure_backend()
        from e2b_code_interpreter import Sandbox

        killed = known.kill() if known is not None else Sandbox.kill(sandbox_id)
        self.forget(sandbox_id)
        log(f"killed sandbox {sandbox_id}" if killed else f"sandbox {sandbox_id} was already gone")
        return bool(killed)

    def close(self) -> None:
        """Kill every sandbox this server created, in parallel so that shutdown stays quick."""
        with self.lock:
            doomed = list(self.created.values())
            self.created.clear()
            self.default_id = None
        threads = [threading.Thread(target=kill_quietly, args=(s,), daemon=True) for s in doomed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def dispatch(pool: SandboxPool, limits: Limits, name: str, arguments: dict[str, Any]) -> ToolOutcome:
    """Run one tool call; every failure becomes an error outcome, so the server keeps serving."""
    import e2b

    arguments = dict(arguments)
    sandbox_id = arguments.pop("sandbox_id", None)
    if sandbox_id is not None and not isinstance(sandbox_id, str):
        return failure("sandbox_id must be a string")
    try:
        if name == "create_sandbox":
            timeout = arguments.get("timeout")
            if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1):
                return failure("timeout must be a positive integer (seconds)")
            sandbox = pool.create(timeout)
            return ToolOutcome({"sandbox_id": sandbox.sandbox_id, "timeout": timeout or pool.timeout})
        if name == "kill_sandbox":
            if sandbox_id and not pool.owns(sandbox_id) and arguments.get("confirm") is not True:
                return failure(
                    f"sandbox {sandbox_id} was not created by this server and may belong to someone else; "
                    "nothing was killed",
                    fix="call kill_sandbox again with confirm: true if it really should be killed",
                )
            killed = pool.kill(sandbox_id)
            return ToolOutcome({"sandbox_id": sandbox_id or None, "killed": killed})
        sandbox = pool.resolve(sandbox_id)
        log(f"{describe_call(name, arguments)} [{sandbox.sandbox_id}]")
        outcome = execute(sandbox, name, arguments, limits)
        log(f"  {outcome.summary()}")
        return outcome
    except Exception as exc:  # the client gets the message; the server stays up
        _, message, fix = describe_error(exc)
        gone = isinstance(exc, e2b.SandboxNotFoundException | e2b.SandboxNotRunningException)
        if gone and name not in ("create_sandbox", "kill_sandbox"):
            lost = sandbox_id or pool.default_id
            if lost:
                pool.forget(lost)
            if sandbox_id is None:
                message += (
                    "; the default sandbox has ended (its files and state are gone): call again to start a new one"
                )
        log(f"  error: {message}")
        return failure(message, **({"fix": fix} if fix and not gone else {}))


def to_mcp(outcome: ToolOutcome) -> Any:
    """A tool outcome as an MCP CallToolResult: JSON text, images, and the payload as structured content."""
    from mcp import types

    content: list[Any] = [types.TextContent(type="text", text=outcome.text())]
    content += [types.ImageContent(type="image", data=i.data, mime_type=i.media_type) for i in outcome.images]
    return types.CallToolResult(content=content, structured_content=outcome.payload, is_error=outcome.is_error)


async def serve(pool: SandboxPool, limits: Limits) -> None:
    """Serve MCP over stdin/stdout until the client closes the connection."""
    import anyio
    from mcp import types
    from mcp.server import Server
    from mcp.server.stdio import stdio_server
    from mcp.shared.exceptions import MCPError

    definitions = tool_definitions()
    tools = [types.Tool(name=t["name"], description=t["description"], input_schema=t["input_schema"])
             for t in definitions]
    names = {t["name"] for t in definitions}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name not in names:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}; the tools are {', '.join(names)}")
        # The SDK blocks while a sandbox works: run it in a worker thread to keep serving other requests.
        outcome = await anyio.to_thread.run_sync(dispatch, pool, limits, params.name, dict(params.arguments or {}))
        return to_mcp(outcome)

    server = Server(SERVER_NAME, instructions=INSTRUCTIONS, on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def stop_on_signals(pool: SandboxPool) -> None:
    """On SIGTERM, SIGINT or SIGHUP: kill this server's sandboxes, then exit at once.

    A clean return is not possible here: the transport reads stdin in a worker thread that cannot be
    interrupted, and a client sends SIGTERM precisely when the server did not stop after stdin closed.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        log(f"{SERVER_NAME}: {signal.Signals(signum).name}: killing the sandboxes it created")
        pool.close()
        log(f"{SERVER_NAME}: stopped")
        os._exit(EXIT_OK)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until the client disconnects, then kill the sandboxes this server created."""
    args = parse_args(argv)
    if args.list_tools:
        import json

        print(json.dumps(tool_definitions(), indent=2))
        return EXIT_OK
    if args.sandbox_timeout < 1:
        fail("--sandbox-timeout must be at least 1 second", fix="for example --sandbox-timeout 1800")
    try:
        import anyio
        from mcp.server import Server  # noqa: F401 - only checks that mcp 2 is installed
    except ImportError:
        fail("the mcp package (version 2) is not installed", fix='pip install "mcp>=2.0"', code=EXIT_BACKEND)

    pool = SandboxPool(args.backend, args.sandbox_timeout)
    limits = Limits(max_output=args.max_output, timeout=args.timeout)
    stop_on_signals(pool)
    log(f"{SERVER_NAME}: MCP server on stdio; sandboxes are created on first use")
    try:
        anyio.run(serve, pool, limits)
    finally:
        pool.close()
        log(f"{SERVER_NAME}: stopped")
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
