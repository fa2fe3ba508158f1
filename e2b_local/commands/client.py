"""The running server of a data directory, found and checked, and its API as the SDK sees it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import click
import httpx

from e2b_local.settings import Paths

# Exit code of a command that needs the server when none runs for the data directory.
EXIT_NOT_RUNNING = 3


class CliError(click.ClickException):
    """A failure the user can act on: one line on stderr, `e2b-local: error: ...`, no traceback."""

    def show(self, file: Any = None) -> None:
        click.echo(f"e2b-local: error: {self.format_message()}", err=True)


class NotRunning(CliError):
    """No server answers for the data directory."""

    exit_code = EXIT_NOT_RUNNING

    def __init__(self, paths: Paths) -> None:
        super().__init__(f"e2b-local is not running for {paths.home}; start it with: e2b-local start")


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (an unreaped zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def recorded(paths: Paths) -> tuple[int | None, int | None]:
    """(pid, port) as the data directory records its server, each None when absent."""
    values: list[int | None] = []
    for path in (paths.pid_file, paths.port_file):
        try:
            values.append(int(path.read_text()))
        except (OSError, ValueError):
            values.append(None)
    return values[0], values[1]


def health(port: int, timeout: float = 2.0) -> dict[str, Any] | None:
    """The health probe's answer at `port`, or None when nothing (or no e2b-local) answers."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = httpx.get(url(port) + "/health", timeout=timeout)
        if response.status_code == 200:
            body = response.json()
            if isinstance(body, dict) and body.get("status") == "ok":
                return body
    return None


@dataclass(frozen=True)
class Running:
    """A server that answers and is the one its data directory records."""

    pid: int
    port: int
    health: dict[str, Any]

    @property
    def url(self) -> str:
        return url(self.port)


def find(paths: Paths) -> Running | None:
    """The server recorded in `paths`, if it is alive and the process answering its port is that server."""
    pid, port = recorded(paths)
    if pid is None or port is None or not alive(pid):
        return None
    found = health(port)
    # A server answering with another pid is some other data directory's, on a port this one recorded once.
    if found is None or found.get("pid", pid) != pid:
        return None
    return Running(pid, port, found)


def api_key(paths: Paths) -> str:
    """The data directory's API key; a one-line error when it cannot be read (not root, say)."""
    try:
        return paths.api_key_file.read_text().strip()
    except PermissionError:
        raise CliError(f"cannot read the API key in {paths.home} (run as its owner, e.g. with sudo)") from None
    except FileNotFoundError:
        raise NotRunning(paths) from None


class Api:
    """The control-plane API of the running server, with its key, as the SDK calls it."""

    def __init__(self, paths: Paths) -> None:
        running = find(paths)
        if running is None:
            raise NotRunning(paths)
        self.running = running
        self.http = httpx.Client(base_url=running.url, headers={"X-API-Key": api_key(paths)}, timeout=60.0)

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204),
                **kwargs: Any) -> httpx.Response:
        """A request; an answer outside `ok` becomes a one-line error with the server's message."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"the server did not answer {method} {path}: {exc}") from None
        if response.status_code not in ok:
            raise CliError(_message(response))
        return response

    def sandboxes(self, states: tuple[str, ...] = ("running",), metadata: dict[str, str] | None = None,
                  ) -> list[dict[str, Any]]:
        """Every sandbox in `states` (whose metadata includes `metadata`), newest first, all pages."""
        params: dict[str, Any] = {"state": ",".join(states), "limit": 100}
        if metadata:
            params["metadata"] = urlencode({quote(k): quote(v) for k, v in metadata.items()})
        out: list[dict[str, Any]] = []
        while True:
            response = self.request("GET", "/v2/sandboxes", params=params)
            out.extend(response.json())
            token = response.headers.get("x-next-token")
            if not token:
                return out
            params["nextToken"] = token

    def sandbox(self, sandbox_id: str) -> dict[str, Any]:
        return self.request("GET", f"/sandboxes/{sandbox_id}").json()


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        text = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        text = None
    return f"{text or response.text.strip() or response.reason_phrase} ({response.status_code})"


def euid_is_root() -> bool:
    return os.geteuid() == 0
