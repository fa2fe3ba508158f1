"""`e2b-local doctor`: what the server needs of this machine, each check with its fix."""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from e2b_local.commands import client, ports
from e2b_local.isolation import merging
from e2b_local.settings import Settings, SettingsError

# Free space a first build of the root filesystems needs, with room for a few sandboxes.
MIN_FREE_GB = 4
APT = "apt-get install -y --no-install-recommends"


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _program(name: str, package: str) -> Check:
    path = shutil.which(name)
    return Check(name, path is not None, path or "not found", "" if path else f"{APT} {package}")


def _cgroups() -> Check:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        controllers = Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
        missing = {"memory", "pids", "cpu"} - set(controllers)
        if not missing:
            return Check("cgroups", True, "v2: " + " ".join(controllers))
    v1 = [c for c in ("memory", "pids", "cpu", "freezer") if Path("/sys/fs/cgroup", c).is_dir()]
    if len(v1) == 4:
        return Check("cgroups", True, "v1: " + " ".join(v1))
    return Check("cgroups", False, "no memory, pids, cpu and freezer controllers found",
                 "mount cgroup2 at /sys/fs/cgroup with those controllers enabled (or the v1 hierarchies)")


def _port(settings: Settings) -> Check:
    running = client.find(settings.paths)
    if running is not None and running.port == settings.port:
        return Check("port", True, f"{settings.port}: this data directory's server (pid {running.pid})")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", settings.port))
        except OSError:
            return Check("port", False, ports.describe_port_owner(settings.port),
                         "stop that program, or choose another port: E2B_LOCAL_PORT=... or --port")
    return Check("port", True, f"{settings.port} is free")


def _disk(settings: Settings) -> Check:
    where = settings.paths.rootfs
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free / 2**30
    ok = free >= MIN_FREE_GB
    return Check("disk space", ok, f"{free:.1f} GiB free at {where}",
                 "" if ok else f"free at least {MIN_FREE_GB} GiB there, or point E2B_LOCAL_ROOTFS/E2B_LOCAL_HOME "
                               "at a larger disk")


def _merging(ksm: Path = merging.KSM) -> Check:
    """What E2B_LOCAL_MERGE_PAGES=1 needs: the kernel's samepage merging."""
    try:
        run, pages, sleep = ((ksm / name).read_text().strip() for name in ("run", "pages_to_scan", "sleep_millisecs"))
    except OSError:
        return Check("page merging", False, f"E2B_LOCAL_MERGE_PAGES=1, but this kernel has no KSM ({ksm})",
                     "a kernel built with CONFIG_KSM, or unset E2B_LOCAL_MERGE_PAGES")
    state = "running" if run == merging.RUNNING else "stopped (the server turns it on)"
    return Check("page merging", True, f"KSM {state}, scanning {pages} pages every {sleep} ms")


def checks(settings: Settings) -> list[Check]:
    """Every check, in the order a fix is best applied."""
    root = os.geteuid() == 0
    return [
        Check("root", root, "running as root" if root else f"uid {os.geteuid()}",
              "" if root else "run e2b-local with sudo (it creates cgroups, mounts and user-namespace maps)"),
        _program("bwrap", "bubblewrap"),
        _program("slirp4netns", "slirp4netns"),
        _program("nft", "nftables"),
        _program("mmdebstrap", "mmdebstrap"),
        _cgroups(),
        _port(settings),
        _disk(settings),
        *([_merging()] if settings.merge_pages else []),
    ]


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="print the checks as JSON")
def doctor(as_json: bool) -> int:
    """Check what the server needs of this machine; exit 1 when something is missing."""
    try:
        settings = Settings.from_environ()
    except SettingsError as exc:
        error = client.CliError(str(exc))
        error.exit_code = 2
        raise error from None
    found = checks(settings)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in found], indent=2))
    else:
        table = Table("", "check", "found", "fix", box=None)
        for c in found:
            table.add_row("[green]ok[/]" if c.ok else "[red]FAIL[/]", c.name, c.detail, c.fix)
        Console().print(table)
    return 0 if all(c.ok for c in found) else 1
