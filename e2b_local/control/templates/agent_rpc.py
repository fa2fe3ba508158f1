"""Running commands and placing files in a build sandbox, through its agent.

The agent speaks envd's Connect protocol; a build needs only `process.Process/Start` (a server
stream of JSON messages, each in Connect's 5-byte envelope) and the `/files` upload.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

# Connect envelope: one flag byte, a 4-byte big-endian length. Flag 2 marks the end of the stream.
END_STREAM = 0x02
UPLOAD_CHUNK = 1024 * 1024


class AgentCallError(Exception):
    """The agent refused a call (an unknown user, say): not a command's own failure."""


def _envelope(message: dict[str, object]) -> bytes:
    data = json.dumps(message).encode()
    return bytes([0]) + len(data).to_bytes(4, "big") + data


async def _messages(response: httpx.Response) -> AsyncIterator[tuple[int, dict[str, object]]]:
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer.extend(chunk)
        while len(buffer) >= 5:
            size = int.from_bytes(buffer[1:5], "big")
            if len(buffer) < 5 + size:
                break
            flags, body = buffer[0], bytes(buffer[5:5 + size])
            del buffer[:5 + size]
            yield flags, json.loads(body) if body else {}


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


@contextlib.asynccontextmanager
async def _start_stream(client: httpx.AsyncClient, argv: list[str], user: str, env: dict[str, str],
                        cwd: str | None) -> AsyncIterator[httpx.Response]:
    """The agent's Process/Start stream for `argv` as `user`, once the agent has accepted it."""
    process: dict[str, object] = {"cmd": argv[0], "args": argv[1:], "envs": env}
    if cwd:
        process["cwd"] = cwd
    headers = {"content-type": "application/connect+json", "authorization": _basic(user)}
    async with client.stream("POST", "/process.Process/Start", headers=headers,
                             content=_envelope({"process": process, "stdin": False})) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")
            raise AgentCallError(f"the sandbox refused the command ({response.status_code}): {text[:500]}")
        yield response


async def run(client: httpx.AsyncClient, argv: list[str], user: str, env: dict[str, str], cwd: str | None,
              on_output: Callable[[str, str], None]) -> int:
    """Run `argv` in the sandbox as `user`; output goes to `on_output(stream, text)`; the exit code."""
    exit_code: int | None = None
    async with _start_stream(client, argv, user, env, cwd) as response:
        async for flags, message in _messages(response):
            if flags & END_STREAM:
                error = message.get("error")
                if isinstance(error, dict):
                    raise AgentCallError(str(error.get("message") or error.get("code")))
                break
            event = message.get("event") or {}
            assert isinstance(event, dict)
            data = event.get("data")
            if isinstance(data, dict):
                for stream in ("stdout", "stderr"):
                    if data.get(stream):
                        on_output(stream, base64.b64decode(str(data[stream])).decode(errors="replace"))
            end = event.get("end")
            if isinstance(end, dict):
                exit_code = int(end.get("exitCode") or 0)
                if not end.get("exited", True) and exit_code == 0:
                    exit_code = -1
    if exit_code is None:
        raise AgentCallError("the command's output ended without its exit status")
    return exit_code


async def upload(client: httpx.AsyncClient, source: Path, destination: str) -> None:
    """Write the host file `source` to `destination` in the sandbox, as root."""

    async def chunks() -> AsyncIterator[bytes]:
        with open(source, "rb") as f:
            while chunk := f.read(UPLOAD_CHUNK):
                yield chunk

    response = await client.post("/files", params={"path": destination, "username": "root"},
                                 headers={"content-type": "application/octet-stream"}, content=chunks())
    if response.status_code >= 300:
        raise AgentCallError(f"placing the files in the build sandbox failed: {response.text[:500]}")


async def start(client: httpx.AsyncClient, argv: list[str], user: str, env: dict[str, str], cwd: str | None) -> None:
    """Start `argv` in the sandbox as `user` and return once it runs (it outlives this call)."""
    async with _start_stream(client, argv, user, env, cwd) as response:
        async for flags, message in _messages(response):
            if flags & END_STREAM:
                error = message.get("error")
                raise AgentCallError(str(error.get("message") if isinstance(error, dict) else "no process started"))
            return
