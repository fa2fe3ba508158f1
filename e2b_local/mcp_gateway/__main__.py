"""`mcp-gateway --config '<json>'`: start the gateway in the background and return once it serves.

Exit status 0 when the gateway listens (it stays up, detached); otherwise 1, with the reason on
stderr (the SDK shows it as "Failed to start MCP gateway: ..."). The token is GATEWAY_ACCESS_TOKEN
(or a new one) and is written to /etc/mcp-gateway/.token for `get_mcp_token()`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
import uuid
from collections.abc import Sequence
from pathlib import Path

from e2b_local.mcp_gateway.config import ConfigError, parse
from e2b_local.protocol import MCP_GATEWAY_PORT

TOKEN_FILE = Path("/etc/mcp-gateway/.token")
LOG_FILE = Path("/var/log/mcp-gateway/gateway.log")
READY = b"ready"


def write_token(token: str) -> None:
    """The token, readable by root only."""
    TOKEN_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    TOKEN_FILE.parent.chmod(0o700)
    fd = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    TOKEN_FILE.chmod(0o600)


def _run_daemon(specs: list, token: str, port: int, report: int) -> None:
    """In the detached process: serve, telling the waiting parent through `report` once ready or failed."""
    from e2b_local.mcp_gateway.gateway import serve

    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    log = open(LOG_FILE, "a", buffering=1)  # noqa: SIM115 - the daemon's log for its whole life
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    reported = False

    def ready() -> None:
        nonlocal reported
        os.write(report, READY)
        os.close(report)
        reported = True

    try:
        asyncio.run(serve(specs, token, port, log, ready))
    except BaseException as exc:
        traceback.print_exc(file=log)
        if not reported:
            message = str(exc) if not isinstance(exc, SystemExit) else f"the gateway stopped ({exc.code})"
            os.write(report, message.encode() or repr(exc).encode())
        os._exit(1)
    os._exit(0)


def start(config: str, port: int) -> int:
    """Check the configuration, start the daemon and wait until it serves or fails."""
    try:
        specs = parse(config)
    except ConfigError as exc:
        print(f"mcp-gateway: {exc}", file=sys.stderr)
        return 1
    token = os.environ.get("GATEWAY_ACCESS_TOKEN") or str(uuid.uuid4())
    write_token(token)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        os.setsid()
        # A second fork: the gateway is no session leader, and its parent returns at once.
        if os.fork() > 0:
            os._exit(0)
        _run_daemon(specs, token, port, write_end)
    os.close(write_end)
    os.waitpid(child, 0)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    answer = b"".join(chunks)
    if answer == READY:
        print(f"mcp-gateway: serving on port {port} at /mcp (log: {LOG_FILE})")
        return 0
    reason = answer.decode(errors="replace") or f"the gateway stopped before it served; see {LOG_FILE}"
    print(f"mcp-gateway: {reason}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """The `mcp-gateway` command."""
    parser = argparse.ArgumentParser(prog="mcp-gateway", description="e2b-local's MCP gateway.")
    parser.add_argument("--config", required=True, help="the MCP servers, as Sandbox.create(mcp=...) gives them")
    parser.add_argument("--port", type=int, default=MCP_GATEWAY_PORT, help="the port to serve on (default %(default)s)")
    args = parser.parse_args(argv)
    return start(args.config, args.port)


if __name__ == "__main__":
    sys.exit(main())
