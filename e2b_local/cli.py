"""The `e2b-local` command: the server's verbs (serve, start, stop, status, env, build, config) and the rest.

Each verb is a click command; the sandbox verbs and `doctor` live in e2b_local/commands/ and are added
to the group below, one line each.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import click

from e2b_local.commands import client, dashboard, doctor, ports, sandboxes, trust
from e2b_local.commands.client import CliError
from e2b_local.settings import CATALOGUE, Paths, Settings, SettingsError, load_or_create_api_key

# How long `start` waits for a freshly spawned server to answer (root filesystems are built first).
START_TIMEOUT = 120.0
# Idle keep-alive connections are closed only after the SDK's own pool has let them go (it keeps them
# 300 s, E2B_KEEPALIVE_EXPIRY): a server that closes first races the client's next request on that
# connection, which then fails with "connection closed before message completed".
KEEP_ALIVE_SECONDS = 330
# How long `stop` waits for the server to exit after SIGTERM (it may wait 30 s for boots) before
# it sends SIGKILL.
STOP_TIMEOUT = 40.0
# ... and after SIGKILL, for the process to be gone.
KILL_WAIT = 5.0
# Exit codes.
EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_RUNNING = 1, 2, client.EXIT_NOT_RUNNING
# The prefix of the one line a failing server writes to its log, which `start` shows.
ERROR_PREFIX = "e2b-local: error: "

EXAMPLES = """\
examples:
  e2b-local start                  # build root filesystems if needed, serve in the background
  eval "$(e2b-local env)"          # point E2B programs in this shell at the local server
  eval "$(e2b-local env --domain)" # the same by E2B_DOMAIN alone (https://api.e2b.localhost:49443)
  python -c "from e2b import Sandbox; s = Sandbox.create(); print(s.commands.run('echo hi').stdout)"
  e2b-local ps                     # the running sandboxes (--all: paused ones too; --json)
  e2b-local status                 # JSON: running, pid, port, url, sandboxes
  e2b-local stop                   # stop the server; running sandboxes keep running"""


def settings_help() -> str:
    """The settings as --help lists them: name, meaning, default (the README and references say the same)."""
    lines = ["settings (environment variables):"]
    for info in CATALOGUE:
        lines.append(f"  {info.name}")
        lines.append(f"      {info.meaning} (default: {info.default})")
    return "\n".join(lines)


EXIT_CODES = ("exit codes: 0 success, 1 failure, 2 a bad argument or setting, "
              "3 the server is not running (status, env, stop and the sandbox verbs)")


def _epilog() -> str:
    # "\b" keeps click from rewrapping a paragraph.
    return "\n\n".join("\b\n" + block for block in (EXAMPLES, settings_help(), EXIT_CODES))


def load_settings() -> Settings:
    """The settings, or a one-line error naming the bad variable (exit 2)."""
    try:
        return Settings.from_environ()
    except SettingsError as exc:
        error = CliError(str(exc))
        error.exit_code = EXIT_USAGE
        raise error from None


def require_root(what: str) -> None:
    """Refuse, in one line, a verb that needs root (cgroups, mounts, user-namespace maps)."""
    if os.geteuid() != 0:
        raise CliError(f"{what} needs root (cgroups, mounts, user namespaces): run it with sudo")


PORT = click.IntRange(1, 65535)


@click.group(epilog=_epilog(), context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="e2b-local", prog_name="e2b-local")
def cli() -> None:
    """A local, offline sandbox server that speaks E2B's API."""


# -- the server ----------------------------------------------------------------------------------------

def build(paths: Paths, force: bool = False, prune: bool = False) -> None:
    """Build (or find cached) the root filesystems of every template; say which."""
    from e2b_local.commands.progress import BuildProgress
    from e2b_local.isolation.rootfs import RootfsStore

    store = RootfsStore(paths.rootfs)
    current = [store.base_path(), store.code_interpreter_path()]
    if force:
        for path in current:
            if path.exists() and _in_use(path):
                raise CliError(f"{path} is in use by running sandboxes; kill them (e2b-local kill --all) first")
        for path in current:
            _remove(path)
    warm = all(p.is_dir() for p in current)
    with BuildProgress(store.pending_stages()) as progress:
        store.log, store.stage = progress.log, progress.stage
        store.ensure_base()
        store.ensure_code_interpreter()
    if warm:
        click.echo(f"root filesystems are built (warm cache): {', '.join(p.name for p in current)} in {paths.rootfs}",
                   err=True)
    if prune:
        # The MCP gateway layer is built on first use; a current one is kept.
        removed, kept = prune_builds(paths.rootfs, [*current, store.mcp_gateway_path()])
        for path in removed:
            click.echo(f"pruned {path}", err=True)
        for path in kept:
            click.echo(f"kept {path}: in use by running sandboxes", err=True)
        if not removed and not kept:
            click.echo("no stale builds to prune", err=True)


def _in_use(path: Any) -> bool:
    """Whether a mount of this machine uses `path` (a lower layer of a running sandbox, say)."""
    text = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(text in line for line in f)


def _remove(path: Any) -> None:
    import shutil

    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def prune_builds(directory: Any, current: list[Any]) -> tuple[list[Any], list[Any]]:
    """Remove the builds in `directory` of other recipes than `current`: (removed, kept because in use)."""
    from pathlib import Path

    removed, kept = [], []
    names = {p.name for p in current}
    root = Path(directory)
    if not root.is_dir():
        return removed, kept
    for entry in sorted(root.iterdir()):
        built = entry.name.startswith(("base-", "code-interpreter-v1-", "mcp-gateway-"))
        stale_build = built and entry.name not in names
        # Interrupted builds leave their work directories behind.
        stale_work = entry.name.startswith(".build-")
        if not (stale_build or stale_work):
            continue
        if _in_use(entry):
            kept.append(entry)
            continue
        _remove(entry)
        removed.append(entry)
    return removed, kept


def _lock(paths: Paths) -> int | None:
    """Take the data directory's server lock; its descriptor, or None when another server holds it."""
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _bind(port: int) -> socket.socket:
    """The server's listening socket, bound before anything is recorded; a one-line error naming the holder."""
    # IPPROTO_TCP spelled out: asyncio turns Nagle off only on accepted sockets that carry it, and a
    # response written as head then body would otherwise wait for the client's delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(ports.describe_port_owner(port)) from None
        raise CliError(f"cannot listen on port {port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def serve(settings: Settings, port: int) -> int:
    """Run the server in the foreground: lock the data directory, bind, record, build, serve."""
    import uvicorn

    from e2b_local.control import serverlog
    from e2b_local.control.server import Server

    require_root("e2b-local serve")
    paths = settings.paths
    api_key = load_or_create_api_key(paths)
    lock = _lock(paths)
    if lock is None:
        pid, recorded_port = client.recorded(paths)
        raise CliError(f"e2b-local is already running for data directory {paths.home} "
                       f"(pid {pid}, port {recorded_port}); stop it first: e2b-local stop")
    sock = _bind(port)
    paths.port_file.write_text(str(port))
    paths.pid_file.write_text(str(os.getpid()))
    try:
        serverlog.configure(log_requests=settings.log_requests)
        build(paths)
        config = uvicorn.Config(
            Server(settings, api_key), log_level="warning", log_config=None, access_log=settings.log_requests,
            # The standard loop even where uvloop is installed (uvicorn would pick it): the HTTPS relay's
            # protocols rely on asyncio's own transports. httptools' parser rather than h11's: every
            # request to a sandbox passes here, and h11 took a third of the server's time for each.
            loop="asyncio", http="httptools",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            # Streams (background commands, watches) never end by themselves: do not wait on them.
            timeout_graceful_shutdown=2)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        with contextlib.suppress(FileNotFoundError):
            if paths.pid_file.read_text() == str(os.getpid()):
                paths.pid_file.unlink()
        os.close(lock)
    return 0


@cli.command("serve")
@click.option("--port", type=PORT, default=None, help="port to listen on (default: E2B_LOCAL_PORT or 49980)")
def serve_command(port: int | None) -> int:
    """Run the server in the foreground."""
    settings = load_settings()
    return serve(settings, port or settings.port)


def _log_error(paths: Paths, offset: int) -> str | None:
    """The last error line a server wrote to the log after `offset`."""
    try:
        with open(paths.log_file, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    lines = [line[len(ERROR_PREFIX):] for line in text.splitlines() if line.startswith(ERROR_PREFIX)]
    return lines[-1] if lines else None


@cli.command("start")
@click.option("--port", type=PORT, default=None, help="port to listen on (default: E2B_LOCAL_PORT or 49980)")
def start_command(port: int | None) -> int:
    """Start the server in the background if it is not running."""
    settings = load_settings()
    require_root("e2b-local start")
    paths = settings.paths
    explicit = port is not None or bool(os.environ.get("E2B_LOCAL_PORT"))
    port = port or settings.port
    if (found := client.find(paths)) is not None:
        if explicit and found.port != port:
            raise CliError(f"e2b-local is already running for {paths.home} at {found.url} (pid {found.pid}), "
                           f"not on port {port}; stop it first to change the port: e2b-local stop")
        click.echo(f"e2b-local is already running (pid {found.pid}) at {found.url}", err=True)
        return 0
    previous, _ = client.recorded(paths)
    if previous is not None and client.alive(previous) and not _wait_exit(previous, STOP_TIMEOUT):
        # A server of this data directory that does not answer (still stopping, say): two would fight
        # over the same sandboxes.
        raise CliError(f"e2b-local (pid {previous}) of {paths.home} is still running but not answering; "
                       "stop it first: e2b-local stop")
    load_or_create_api_key(paths)
    build(paths)  # in the foreground, so its progress is visible
    offset = paths.log_file.stat().st_size if paths.log_file.exists() else 0
    with open(paths.log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "e2b_local", "serve", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env={**os.environ, "E2B_LOCAL_HOME": str(paths.home)},
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            cause = _log_error(paths, offset)
            raise CliError(f"e2b-local failed to start: {cause}" if cause
                           else f"e2b-local failed to start; see {paths.log_file}")
        # Answering is not enough: the process at the port must be the one just started.
        answer = client.health(port, timeout=1.0)
        if answer is not None and answer.get("pid") == proc.pid:
            click.echo(f"e2b-local is running (pid {proc.pid}) at {client.url(port)}", err=True)
            return 0
        time.sleep(0.1)
    raise CliError(f"e2b-local did not answer within {START_TIMEOUT:.0f} s; see {paths.log_file}")


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit; whether it did."""
    deadline = time.monotonic() + timeout
    while client.alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@cli.command("stop")
def stop_command() -> int:
    """Stop the background server (running sandboxes keep running)."""
    paths = load_settings().paths
    found = client.find(paths)
    if found is None:
        click.echo("e2b-local is not running", err=True)
        return EXIT_NOT_RUNNING
    os.kill(found.pid, signal.SIGTERM)
    if not _wait_exit(found.pid, STOP_TIMEOUT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(found.pid, signal.SIGKILL)
        _wait_exit(found.pid, KILL_WAIT)
    click.echo("e2b-local stopped (running sandboxes keep running)", err=True)
    return 0


def _environment(paths: Paths, port: int) -> dict[str, str]:
    url = client.url(port)
    return {"E2B_API_URL": url, "E2B_SANDBOX_URL": url, "E2B_VOLUME_API_URL": url, "E2B_API_KEY": client.api_key(paths)}


@cli.command("env")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of export lines")
@click.option("--domain", is_flag=True,
              help="domain mode: E2B_DOMAIN and the TLS trust settings, without the deprecated URL variables")
def env_command(as_json: bool, domain: bool) -> int:
    """Print export lines for the SDK: E2B_API_URL, E2B_SANDBOX_URL, E2B_VOLUME_API_URL and E2B_API_KEY."""
    settings = load_settings()
    paths = settings.paths
    found = client.find(paths)
    if found is None:
        click.echo("e2b-local is not running; start it with: e2b-local start", err=True)
        return EXIT_NOT_RUNNING
    env = trust.domain_environment(settings, client.api_key(paths)) if domain else _environment(paths, found.port)
    if as_json:
        click.echo(json.dumps(env))
    else:
        click.echo("export " + " ".join(f"{k}={v}" for k, v in env.items()))
    return 0


@cli.command("status")
def status_command() -> int:
    """Print the server's status as JSON."""
    paths = load_settings().paths
    found = client.find(paths)
    if found is None:
        click.echo(json.dumps({"running": False, "home": str(paths.home)}))
        return EXIT_NOT_RUNNING
    api = client.Api(paths)
    sandboxes = api.sandboxes(("running", "paused"))
    health = found.health
    click.echo(json.dumps({"running": True, "pid": found.pid, "port": found.port, "url": found.url,
                           "home": str(paths.home), "sandboxes": len(sandboxes), "version": health.get("version"),
                           "uptime": health.get("uptime"), "templates": health.get("templates")}))
    return 0


@cli.command("build")
@click.option("--force", is_flag=True, help="rebuild the current root filesystems even when they are cached")
@click.option("--prune", is_flag=True, help="remove cached builds of older recipes (those no sandbox uses)")
def build_command(force: bool, prune: bool) -> int:
    """Build the root filesystems of the templates (done by start too)."""
    paths = load_settings().paths
    require_root("e2b-local build")
    build(paths, force=force, prune=prune)
    return 0


def config_rows(settings: Settings, environ: dict[str, str]) -> list[dict[str, Any]]:
    """Every setting with its value and where the value comes from."""
    rows = []
    for info in CATALOGUE:
        value = getattr(settings, info.attr)
        if info.attr == "rootfs":
            value = settings.paths.rootfs
        if isinstance(value, bool):
            value = int(value)
        rows.append({"name": info.name, "value": str(value),
                     "source": "environment" if environ.get(info.name) else "default", "meaning": info.meaning})
    return rows


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="print a JSON array")
def config_command(as_json: bool) -> int:
    """Show every setting, its value and its source (environment or default)."""
    rows = config_rows(load_settings(), dict(os.environ))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", "source", "meaning", box=None)
    for row in rows:
        table.add_row(row["name"], row["value"], row["source"], row["meaning"])
    Console().print(table)
    return 0


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell: str) -> int:
    """Print the shell completion script: eval "$(e2b-local completion bash)"."""
    from click.shell_completion import get_completion_class

    completion = get_completion_class(shell)
    assert completion is not None
    click.echo(completion(cli, {}, "e2b-local", "_E2B_LOCAL_COMPLETE").source())
    return 0


@cli.command("trust")
@click.option("--remove", is_flag=True, help="remove the authority from the system store")
def trust_command(remove: bool) -> int:
    """Add the local certificate authority (domain mode's HTTPS) to the system store, or remove it."""
    require_root("e2b-local trust")
    return trust.trust(load_settings(), remove)


for _command in (*sandboxes.COMMANDS, doctor.doctor, dashboard.dashboard):
    cli.add_command(_command)
cli.add_command(sandboxes.ps, "ls")


def main(argv: list[str] | None = None) -> int:
    """Run the command; its exit code (one line on stderr for every failure the user can act on)."""
    try:
        result = cli.main(args=argv, prog_name="e2b-local", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return EXIT_FAILURE
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
