"""Who holds a TCP port on this machine: the cause `serve` reports when it cannot listen."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import httpx

# /proc/net/tcp's state of a listening socket.
TCP_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def listener_pid(port: int) -> int | None:
    """The pid of a process with a socket listening on `port` (in this network namespace), if any is found."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        return int(proc.name)
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _e2b_local_home(pid: int, port: int) -> str | None:
    """The data directory of the e2b-local at `port`, from its health probe or, failing that, its environment."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        home = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).json().get("home")
        if home:
            return str(home)
    with contextlib.suppress(OSError):
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if entry.startswith(b"E2B_LOCAL_HOME="):
                return entry.split(b"=", 1)[1].decode(errors="replace")
    return None


def describe_port_owner(port: int) -> str:
    """'port N is in use by pid M (...)', naming another e2b-local and its data directory when it is one."""
    pid = listener_pid(port)
    if pid is None:
        return f"port {port} is in use"
    command = _cmdline(pid)
    if "e2b_local" in command or "e2b-local" in command:
        home = _e2b_local_home(pid, port)
        return f"port {port} is in use by pid {pid} (another e2b-local, data directory {home or 'unknown'})"
    return f"port {port} is in use by pid {pid} ({command or 'unknown command'})"
