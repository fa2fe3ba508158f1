"""Docker-like verbs over the running server's API: ps, inspect, logs, stats, kill, pause, resume, templates."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from e2b_local.commands.client import Api, CliError
from e2b_local.settings import Paths, Settings, SettingsError

# How often `logs -f` and `stats` look again.
POLL_SECONDS = 1.0
# Log entries asked for at once (the API's largest page).
LOG_PAGE = 1000


def _paths() -> Paths:
    try:
        return Settings.from_environ().paths
    except SettingsError as exc:
        error = CliError(str(exc))
        error.exit_code = 2
        raise error from None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ago(text: str | None) -> str:
    moment = _time(text)
    if moment is None:
        return "-"
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    return _duration(seconds) + " ago" if seconds >= 0 else "in " + _duration(-seconds)


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _metadata(metadata: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((metadata or {}).items()))


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _filters(raw: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--filter")
        out[key] = value
    return out


@click.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="paused sandboxes too")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="only sandboxes with this metadata")
@click.option("--json", "as_json", is_flag=True, help="print the sandboxes as the API lists them (JSON)")
def ps(show_all: bool, filters: tuple[str, ...], as_json: bool) -> int:
    """List the running sandboxes (--all: paused ones too)."""
    api = Api(_paths())
    states = ("running", "paused") if show_all else ("running",)
    sandboxes = api.sandboxes(states, _filters(filters))
    if as_json:
        _emit(sandboxes)
        return 0
    table = Table("SANDBOX ID", "TEMPLATE", "STATE", "STARTED", "ENDS", "METADATA", box=None)
    for s in sandboxes:
        table.add_row(s["sandboxID"], s.get("alias") or s["templateID"], s["state"], _ago(s.get("startedAt")),
                      _ago(s.get("endAt")), _metadata(s.get("metadata")))
    Console().print(table)
    return 0


@click.command("inspect")
@click.argument("sandbox_ids", nargs=-1, required=True, metavar="ID...")
def inspect(sandbox_ids: tuple[str, ...]) -> int:
    """Print each sandbox's details as JSON (the API's view, without its access token)."""
    api = Api(_paths())
    details = []
    for sandbox_id in sandbox_ids:
        detail = api.sandbox(sandbox_id)
        detail.pop("envdAccessToken", None)
        details.append(detail)
    _emit(details)
    return 0


def _server_lines(paths: Paths, offset: int = 0) -> tuple[list[str], int]:
    """Lines of server.log after `offset`, and the offset reached."""
    try:
        with open(paths.log_file, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    # Only whole lines: a partial last line waits for the next look.
    end = data.rfind(b"\n") + 1
    return data[:end].decode(errors="replace").splitlines(), offset + end


def _follow_server(paths: Paths, follow: bool) -> None:
    lines, offset = _server_lines(paths)
    for line in lines:
        click.echo(line)
    while follow:
        time.sleep(POLL_SECONDS)
        lines, offset = _server_lines(paths, offset)
        for line in lines:
            click.echo(line)


def _log_line(entry: dict[str, Any]) -> str:
    """One entry as `e2b-local logs` prints it: time, level, logger, message, then its other fields."""
    fields = dict(entry.get("fields") or {})
    logger = str(fields.pop("logger", "")).removesuffix("Svc")
    extra = " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
    return f"{entry['timestamp']} {entry['level'].upper():<5} {logger:<9} {entry['message']}" + (
        f"  {extra}" if extra else "")


class _LogCursor:
    """Reads a sandbox's log entries page by page, each once.

    The API's cursor is a time in milliseconds and includes entries at that time, so the entries
    already printed at the cursor's millisecond are counted and skipped on the next read.
    """

    def __init__(self, api: Api, sandbox_id: str) -> None:
        self.api = api
        self.path = f"/v2/sandboxes/{sandbox_id}/logs"
        self.cursor: int | None = None
        self.seen_at_cursor = 0

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """The entries not read yet (one page), and whether the page was full."""
        params: dict[str, Any] = {"direction": "forward", "limit": LOG_PAGE}
        if self.cursor is not None:
            params["cursor"] = self.cursor
        page = self.api.request("GET", self.path, params=params).json()["logs"]
        fresh = []
        skip = self.seen_at_cursor
        for entry in page:
            ms = _milliseconds(entry["timestamp"])
            if ms == self.cursor and skip:
                skip -= 1
                continue
            fresh.append(entry)
            if ms == self.cursor:
                self.seen_at_cursor += 1
            else:
                self.cursor, self.seen_at_cursor = ms, 1
        return fresh, len(page) == LOG_PAGE and bool(fresh)


def _milliseconds(timestamp: str) -> int:
    moment = _time(timestamp)
    assert moment is not None
    return round(moment.timestamp() * 1000)


@click.command("logs")
@click.argument("sandbox_id", required=False)
@click.option("--server", is_flag=True, help="the server's own log (server.log) instead of a sandbox's")
@click.option("-f", "--follow", is_flag=True,
              help="keep printing new entries (a running command's output too) until the sandbox is killed")
def logs(sandbox_id: str | None, server: bool, follow: bool) -> int:
    """Print a sandbox's log: lifecycle, processes started and ended, their output lines (or --server)."""
    paths = _paths()
    if server == (sandbox_id is not None):
        raise click.UsageError("give a sandbox ID or --server")
    if server:
        _follow_server(paths, follow)
        return 0
    api = Api(paths)
    # The logs API answers for a killed sandbox too, and 404 for an unknown id.
    cursor = _LogCursor(api, str(sandbox_id))
    while True:
        entries, more = cursor.read()
        for entry in entries:
            click.echo(_log_line(entry))
        if more:
            continue
        if not follow:
            return 0
        # Killed: what it logged until then has been printed (the kill reads the agent's last entries).
        if api.request("GET", f"/sandboxes/{sandbox_id}", ok=(200, 404)).status_code == 404:
            entries, _ = cursor.read()
            for entry in entries:
                click.echo(_log_line(entry))
            return 0
        time.sleep(POLL_SECONDS)


def _latest(api: Api, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    return api.request("GET", "/sandboxes/metrics", params={"sandbox_ids": ",".join(ids)}).json()["sandboxes"]


@click.command("stats")
@click.argument("sandbox_ids", nargs=-1, metavar="[ID]...")
@click.option("--json", "as_json", is_flag=True, help="print the latest samples as JSON, once")
@click.option("--no-stream", is_flag=True, help="print once instead of refreshing")
def stats(sandbox_ids: tuple[str, ...], as_json: bool, no_stream: bool) -> int:
    """CPU, memory and disk of the running sandboxes (or those named), refreshed until interrupted."""
    api = Api(_paths())
    ids = list(sandbox_ids) or [s["sandboxID"] for s in api.sandboxes()]
    for sandbox_id in sandbox_ids:
        api.sandbox(sandbox_id)
    if as_json:
        _emit(_latest(api, ids))
        return 0

    def table() -> Table:
        out = Table("SANDBOX ID", "CPU %", "CPUS", "MEMORY", "DISK", box=None)
        for sandbox_id, m in _latest(api, ids).items():
            out.add_row(sandbox_id, f"{m.get('cpuUsedPct', 0):.1f}", str(m.get("cpuCount", "-")),
                        f"{_mib(m.get('memUsed'))} / {_mib(m.get('memTotal'))}",
                        f"{_mib(m.get('diskUsed'))} / {_mib(m.get('diskTotal'))}")
        return out

    if no_stream:
        Console().print(table())
        return 0
    from rich.live import Live

    with Live(table(), auto_refresh=False) as live:
        while True:
            time.sleep(POLL_SECONDS)
            live.update(table(), refresh=True)


def _mib(value: Any) -> str:
    return "-" if value is None else f"{int(value) / 2**20:.0f} MiB"


@click.command("kill")
@click.argument("sandbox_ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "kill_all", is_flag=True, help="every sandbox (running and paused), or those --filter picks")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="with --all: only this metadata")
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True, help="print the killed sandboxes' ids as JSON")
def kill(sandbox_ids: tuple[str, ...], kill_all: bool, filters: tuple[str, ...], yes: bool, as_json: bool) -> int:
    """Kill sandboxes by id, or --all of them (asks first unless --yes)."""
    if kill_all == bool(sandbox_ids):
        raise click.UsageError("give sandbox IDs or --all")
    if filters and not kill_all:
        raise click.UsageError("--filter goes with --all")
    api = Api(_paths())
    ids = list(sandbox_ids)
    if kill_all:
        ids = [s["sandboxID"] for s in api.sandboxes(("running", "paused"), _filters(filters))]
    if not ids:
        click.echo("no sandboxes to kill", err=True)
        if as_json:
            _emit([])
        return 0
    if not yes:
        click.confirm(f"Kill {len(ids)} sandbox{'es' if len(ids) != 1 else ''} ({', '.join(ids)})?", abort=True,
                      err=True)
    for sandbox_id in ids:
        api.request("DELETE", f"/sandboxes/{sandbox_id}")
        if not as_json:
            click.echo(sandbox_id)
    if as_json:
        _emit(ids)
    return 0


@click.command("pause")
@click.argument("sandbox_ids", nargs=-1, required=True, metavar="ID...")
def pause(sandbox_ids: tuple[str, ...]) -> int:
    """Pause sandboxes (their processes and files are kept)."""
    api = Api(_paths())
    for sandbox_id in sandbox_ids:
        api.request("POST", f"/sandboxes/{sandbox_id}/pause")
        click.echo(sandbox_id)
    return 0


@click.command("resume")
@click.argument("sandbox_ids", nargs=-1, required=True, metavar="ID...")
@click.option("--timeout", type=click.IntRange(1), default=300, show_default=True,
              help="seconds the resumed sandbox lives")
def resume(sandbox_ids: tuple[str, ...], timeout: int) -> int:
    """Resume paused sandboxes."""
    api = Api(_paths())
    for sandbox_id in sandbox_ids:
        api.request("POST", f"/sandboxes/{sandbox_id}/connect", json={"timeout": timeout})
        click.echo(sandbox_id)
    return 0


@click.command("templates")
@click.option("--json", "as_json", is_flag=True, help="print the template names as JSON")
def templates(as_json: bool) -> int:
    """List the templates the server can start."""
    names = Api(_paths()).running.health.get("templates", [])
    if as_json:
        _emit(names)
        return 0
    for name in names:
        click.echo(name)
    return 0


COMMANDS = (ps, inspect, logs, stats, kill, pause, resume, templates)
