"""The `e2b-local` command: serve, start, stop, status, env, build."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import httpx

from e2b_local import domain_cli
from e2b_local.settings import Paths, Settings, SettingsError, load_or_create_api_key

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

EPILOG = """\
examples:
  e2b-local start                  # build root filesystems if needed, serve in the background
  eval "$(e2b-local env)"          # point E2B programs in this shell at the local server
  eval "$(e2b-local env --domain)" # the same by E2B_DOMAIN alone (https://api.e2b.localhost:49443)
  python -c "from e2b import Sandbox; s = Sandbox.create(); print(s.commands.run('echo hi').stdout)"
  e2b-local status                 # JSON: running, pid, port, url, sandboxes
  e2b-local stop                   # stop the server; running sandboxes keep running

environment:
  E2B_LOCAL_HOME     data directory (default: $XDG_DATA_HOME/e2b-local or ~/.local/share/e2b-local)
  E2B_LOCAL_PORT     port (default 49980), also --port
  E2B_LOCAL_ROOTFS   where built root filesystems are cached (default: <data directory>/rootfs)
  E2B_LOCAL_CPU_COUNT, E2B_LOCAL_MEMORY_MB, E2B_LOCAL_DISK_MB, E2B_LOCAL_MAX_PIDS
                     each sandbox's vCPUs (2), memory (1024 MB), disk (10240 MB) and process limit (1024)
  E2B_LOCAL_POOL_SIZE          pre-started sandboxes per template (1; 0 turns the warm pool off)
  E2B_LOCAL_BOOT_CONCURRENCY   sandboxes booted at once (3 per core)
  E2B_LOCAL_DOMAIN, E2B_LOCAL_HTTPS_PORT  domain mode's domain (e2b.localhost) and HTTPS port (49443; 0: off)

exit codes: 0 success, 1 failure, 2 a bad argument or setting, 3 the server is not running (status, env, stop)
"""


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (an unreaped zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _recorded_pid(paths: Paths) -> int | None:
    try:
        return int(paths.pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit; whether it did."""
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _running(paths: Paths) -> tuple[int, int] | None:
    """(pid, port) of the server if it is running and answering."""
    pid = _recorded_pid(paths)
    try:
        port = int(paths.port_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if pid is None or not _alive(pid):
        return None
    try:
        httpx.get(_url(port) + "/health", timeout=2.0).raise_for_status()
    except httpx.HTTPError:
        return None
    return pid, port


def build(paths: Paths) -> None:
    """Build (or find cached) the root filesystems of every template."""
    from e2b_local.isolation.rootfs import RootfsStore

    store = RootfsStore(paths.rootfs)
    store.ensure_base()
    store.ensure_code_interpreter()


def cmd_serve(settings: Settings, port: int) -> int:
    import uvicorn

    from e2b_local.control import serverlog
    from e2b_local.control.server import Server

    serverlog.configure()
    paths = settings.paths
    api_key = load_or_create_api_key(paths)
    build(paths)
    paths.port_file.write_text(str(port))
    paths.pid_file.write_text(str(os.getpid()))
    try:
        uvicorn.run(Server(settings, api_key), host="127.0.0.1", port=port, log_level="warning", log_config=None,
                    access_log=False, timeout_keep_alive=KEEP_ALIVE_SECONDS, h11_max_incomplete_event_size=None,
                    # Streams (background commands, watches) never end by themselves: do not wait on them.
                    timeout_graceful_shutdown=2)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if paths.pid_file.read_text() == str(os.getpid()):
                paths.pid_file.unlink()
    return 0


def cmd_start(paths: Paths, port: int) -> int:
    if (found := _running(paths)) is not None:
        print(f"e2b-local is already running (pid {found[0]}) at {_url(found[1])}", file=sys.stderr)
        return 0
    previous = _recorded_pid(paths)
    if previous is not None and _alive(previous) and not _wait_exit(previous, STOP_TIMEOUT):
        # A server of this data directory that does not answer (still stopping, say): two would fight
        # over the same sandboxes.
        print(f"e2b-local (pid {previous}) of {paths.home} is still running but not answering; "
              "stop it first: e2b-local stop", file=sys.stderr)
        return 1
    load_or_create_api_key(paths)
    build(paths)  # in the foreground, so its progress is visible
    paths.home.mkdir(parents=True, exist_ok=True)
    with open(paths.log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "e2b_local", "serve", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env={**os.environ, "E2B_LOCAL_HOME": str(paths.home)},
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"e2b-local failed to start; see {paths.log_file}", file=sys.stderr)
            return 1
        if _running(paths) is not None:
            print(f"e2b-local is running (pid {proc.pid}) at {_url(port)}", file=sys.stderr)
            return 0
        time.sleep(0.1)
    print(f"e2b-local did not answer within {START_TIMEOUT:.0f} s; see {paths.log_file}", file=sys.stderr)
    return 1


def cmd_stop(paths: Paths) -> int:
    found = _running(paths)
    if found is None:
        print("e2b-local is not running", file=sys.stderr)
        return 3
    pid = found[0]
    os.kill(pid, signal.SIGTERM)
    if not _wait_exit(pid, STOP_TIMEOUT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, KILL_WAIT)
    print("e2b-local stopped (running sandboxes keep running)", file=sys.stderr)
    return 0


def _environment(paths: Paths, port: int) -> dict[str, str]:
    return {"E2B_API_URL": _url(port), "E2B_SANDBOX_URL": _url(port), "E2B_API_KEY": load_or_create_api_key(paths)}


def cmd_env(settings: Settings, as_json: bool, domain: bool) -> int:
    paths = settings.paths
    found = _running(paths)
    if found is None:
        print("e2b-local is not running; start it with: e2b-local start", file=sys.stderr)
        return 3
    env = (domain_cli.domain_environment(settings, load_or_create_api_key(paths)) if domain
           else _environment(paths, found[1]))
    if as_json:
        print(json.dumps(env))
    else:
        print("export " + " ".join(f"{k}={v}" for k, v in env.items()))
    return 0


def cmd_status(paths: Paths) -> int:
    found = _running(paths)
    if found is None:
        print(json.dumps({"running": False, "home": str(paths.home)}))
        return 3
    pid, port = found
    key = load_or_create_api_key(paths)
    sandboxes = httpx.get(_url(port) + "/v2/sandboxes", headers={"X-API-Key": key}, timeout=10).json()
    print(json.dumps({"running": True, "pid": pid, "port": port, "url": _url(port), "home": str(paths.home),
                      "sandboxes": len(sandboxes)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="e2b-local", description="A local, offline sandbox server that speaks E2B's API.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("serve", "run the server in the foreground"),
                       ("start", "start the server in the background if it is not running")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--port", type=int, default=None, help="port to listen on (default 49980)")
    sub.add_parser("stop", help="stop the background server")
    sub.add_parser("status", help="print the server's status as JSON")
    env = sub.add_parser("env", help="print export lines for E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY")
    env.add_argument("--json", action="store_true", help="print a JSON object instead of export lines")
    env.add_argument("--domain", action="store_true",
                     help="domain mode: E2B_DOMAIN and the TLS trust settings, without the deprecated URL variables")
    trust = sub.add_parser("trust", help="add the local certificate authority to the system store")
    trust.add_argument("--remove", action="store_true", help="remove the authority from the system store")
    sub.add_parser("build", help="build the root filesystems of the templates (done by start too)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_environ()
    except SettingsError as exc:
        # A bad value is the user's to fix: one line naming the variable, exit 2 as for a bad argument.
        print(f"e2b-local: error: {exc}", file=sys.stderr)
        return 2
    paths = settings.paths
    port = getattr(args, "port", None) or settings.port
    if args.command == "serve":
        return cmd_serve(settings, port)
    if args.command == "start":
        return cmd_start(paths, port)
    if args.command == "stop":
        return cmd_stop(paths)
    if args.command == "status":
        return cmd_status(paths)
    if args.command == "env":
        return cmd_env(settings, args.json, args.domain)
    if args.command == "trust":
        return domain_cli.trust(settings, args.remove)
    build(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
