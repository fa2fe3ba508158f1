"""The fork server's zygotes: one pre-imported agent per base layer and agent bundle (see e2b_local/zygote).

A fresh agent spends a third of a second of CPU importing its modules, and each keeps a private copy
of everything it imported. A zygote imports them once; every sandbox's agent is a fork of it, which
starts in milliseconds and shares those pages with the zygote and its other forks until it writes
to them.

A zygote runs the base layer's Python as host root, in a mount namespace of its own whose root is a
tmpfs holding only the base layer and the agent bundle, read-only, at the paths sandboxes see them
at (so every module's path, and any later import, is the same as in a sandbox), and links to the
base layer's top directories. It is started on
the first launch that needs it, replaced when it has died, and ends when the fork server does (its
request socket closes). It holds nothing of any sandbox: each request's details go to its fork.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import traceback
from dataclasses import dataclass

from e2b_local import linux
from e2b_local.linux import CLONE_NEWNS, MS_BIND, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT
from e2b_local.protocol import AGENT_MOUNT, BASE_MOUNT, ZYGOTE_FD_VARIABLE

# The zygote's root, in its own mount namespace (the mount hides whatever the host has there).
ROOT = "/tmp"
# Zygotes kept at once; the least recently used goes when another base layer or bundle needs one.
MAX_ZYGOTES = 4


@dataclass
class Zygote:
    """A running zygote, as its fork server holds it."""

    pid: int
    pidfd: int
    requests: socket.socket

    def alive(self) -> bool:
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        """Let it go: it exits once no launcher holds its socket either."""
        self.requests.close()
        os.close(self.pidfd)


class Zygotes:
    """The zygotes of one fork server, by (base layer, agent bundle)."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], Zygote] = {}

    def get(self, base_layer: str, agent_package: str, command: list[str], env: dict[str, str]) -> socket.socket:
        """The request socket of the zygote for this base layer and bundle, started with `command` if needed."""
        key = (base_layer, agent_package)
        zygote = self._running.pop(key, None)
        if zygote is not None and not zygote.alive():
            zygote.close()
            zygote = None
        if zygote is None:
            zygote = start(base_layer, agent_package, command, env)
        self._running[key] = zygote  # most recently used last
        while len(self._running) > MAX_ZYGOTES:
            self._running.pop(next(iter(self._running))).close()
        return zygote.requests


def start(base_layer: str, agent_package: str, command: list[str], env: dict[str, str]) -> Zygote:
    """Start a zygote running `command` (the base layer's Python, by its sandbox paths) over these files."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            os.setsid()
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            _enter_root(base_layer, agent_package)
            os.set_inheritable(theirs.fileno(), True)
            os.execve(command[0], command, {**env, ZYGOTE_FD_VARIABLE: str(theirs.fileno())})
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(127)
    theirs.close()
    return Zygote(pid, os.pidfd_open(pid), ours)


def _enter_root(base_layer: str, agent_package: str) -> None:
    """In the zygote's process, before its exec: a private mount namespace whose root holds only its files."""
    linux.unshare(CLONE_NEWNS)
    linux.mount("none", "/", "", MS_REC | MS_PRIVATE, "")
    # Opened first (in this namespace: a bind's source must be): the data directory may be under
    # ROOT, which the tmpfs is about to cover.
    sources = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in (base_layer, agent_package)]
    linux.mount("tmpfs", ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for source, target in zip(sources, (BASE_MOUNT, AGENT_MOUNT + "/e2b_local"), strict=True):
        path = ROOT + target
        os.makedirs(path, mode=0o755)
        linux.mount(f"/proc/self/fd/{source}", path, "", MS_BIND | MS_REC, "")
        linux.mount("none", path, "", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, "")
        os.close(source)
    # The layer's own absolute links (its loader's, say) resolve as in a sandbox, whose root holds the same files.
    for name in os.listdir(ROOT + BASE_MOUNT):
        if not os.path.lexists(ROOT + "/" + name):
            os.symlink(f"{BASE_MOUNT}/{name}", f"{ROOT}/{name}")
    os.chroot(ROOT)
    os.chdir("/")
