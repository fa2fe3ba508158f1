"""The fork server's zygotes: pre-imported agents and Python kernels, forked into sandboxes (see e2b_local/zygote).

A fresh agent spends a third of a second of CPU importing its modules, and each keeps a private copy
of everything it imported. A zygote imports them once; every sandbox's agent is a fork of it, which
starts in milliseconds and shares those pages with the zygote and its other forks until it writes
to them.

An agent zygote (one per base layer and agent bundle) runs the base layer's Python as host root, in
a mount namespace of its own whose root is a tmpfs holding only the base layer and the agent bundle,
read-only, at the paths sandboxes see them at (so every module's path, and any later import, is the
same as in a sandbox), and links to the base layer's top directories. A kernel zygote (one per
template with an ipykernel) runs the template's Python in a root made of the template's layers.
Both run code of their layers as host root before any fork drops into a sandbox, so zygotes are only
started on layers e2b-local built itself: the base layer always is one; a custom template's layers
(whatever its builder or image put in them) never get a kernel zygote, and its kernels are executed.

A zygote is started on the first launch that needs it, replaced when it has died, and ends when the
fork server does (its request socket closes). An agent zygote holds nothing of any sandbox: each
request's details go to its fork. A kernel zygote holds, for each sandbox registered with it, what
that sandbox's kernels join (namespaces, cgroups, seccomp filter) and the channel they are asked for
through.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from e2b_local import linux
from e2b_local.isolation.tracking import TrackedProcess
from e2b_local.linux import CLONE_NEWNS, MS_BIND, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT
from e2b_local.protocol import AGENT_MOUNT, BASE_MOUNT, PYTHON_KERNELSPEC, ZYGOTE_FD_VARIABLE

# The zygote's root, in its own mount namespace (the mount hides whatever the host has there).
ROOT = "/tmp"
# Zygotes kept at once; the least recently used goes when another base layer or bundle needs one.
MAX_ZYGOTES = 6


@dataclass
class Zygote:
    """A running zygote, as its fork server holds it."""

    process: TrackedProcess
    requests: socket.socket

    def alive(self) -> bool:
        return self.process.alive()

    def close(self) -> None:
        """Let it go: it exits once no launcher holds its socket either."""
        self.requests.close()
        self.process.close()


class Zygotes:
    """The zygotes of one fork server, by what they were started for."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, ...], Zygote] = {}

    def get(self, key: tuple[str, ...], command: list[str], env: dict[str, str],
            enter_root: Callable[[], None]) -> socket.socket:
        """The request socket of the zygote for `key`, started if needed (see `start`)."""
        zygote = self._running.pop(key, None)
        if zygote is not None and not zygote.alive():
            zygote.close()
            zygote = None
        if zygote is None:
            zygote = start(command, env, enter_root)
        self._running[key] = zygote  # most recently used last
        while len(self._running) > MAX_ZYGOTES:
            self._running.pop(next(iter(self._running))).close()
        return zygote.requests


def start(command: list[str], env: dict[str, str], enter_root: Callable[[], None]) -> Zygote:
    """Start a zygote running `command` once `enter_root` has made its mount namespace."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            os.setsid()
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            enter_root()
            os.set_inheritable(theirs.fileno(), True)
            os.execve(command[0], command, {**env, ZYGOTE_FD_VARIABLE: str(theirs.fileno())})
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(127)
    theirs.close()
    return Zygote(TrackedProcess(pid, os.pidfd_open(pid)), ours)


def _private_tmpfs(paths: list[str]) -> list[int]:
    """A private mount namespace with a tmpfs at ROOT; descriptors of `paths`, opened before it covers them."""
    linux.unshare(CLONE_NEWNS)
    linux.mount("none", "/", "", MS_REC | MS_PRIVATE, "")
    # In this namespace (a bind's source must be), and first: the data directory may be under ROOT.
    fds = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in paths]
    linux.mount("tmpfs", ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    return fds


def _bind_read_only(fd: int, target: str) -> None:
    linux.mount(f"/proc/self/fd/{fd}", target, "", MS_BIND | MS_REC, "")
    linux.mount("none", target, "", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, "")
    os.close(fd)


def agent_root(base_layer: str, agent_package: str) -> None:
    """The agent zygote's root: a tmpfs with only the base layer and the bundle, and links to the layer's top."""
    sources = _private_tmpfs([base_layer, agent_package])
    for source, target in zip(sources, (BASE_MOUNT, AGENT_MOUNT + "/e2b_local"), strict=True):
        os.makedirs(ROOT + target, mode=0o755)
        _bind_read_only(source, ROOT + target)
    # The layer's own absolute links (its loader's, say) resolve as in a sandbox, whose root holds the same files.
    for name in os.listdir(ROOT + BASE_MOUNT):
        if not os.path.lexists(ROOT + "/" + name):
            os.symlink(f"{BASE_MOUNT}/{name}", f"{ROOT}/{name}")
    os.chroot(ROOT)
    os.chdir("/")


# Inside the kernel zygote's tmpfs: the topmost (empty) layer, with the bundle's mount point, and the root.
_KERNEL_TOP = ROOT + "/top"
_KERNEL_ROOT = ROOT + "/root"
_OLD_ROOT = "/.e2b/oldroot"


def kernel_root(lowers: list[str], agent_package: str) -> None:
    """The kernel zygote's root: the template's layers, read-only, with the bundle at its sandbox path."""
    *layers, bundle = _private_tmpfs([*lowers, agent_package])
    for path in (_KERNEL_TOP + AGENT_MOUNT + "/e2b_local", _KERNEL_TOP + _OLD_ROOT, _KERNEL_ROOT):
        os.makedirs(path, mode=0o755)
    lowerdir = ":".join([_KERNEL_TOP, *(f"/proc/self/fd/{fd}" for fd in layers)])
    linux.mount("overlay", _KERNEL_ROOT, "overlay", MS_RDONLY, f"lowerdir={lowerdir}")
    for fd in layers:
        os.close(fd)
    _bind_read_only(bundle, _KERNEL_ROOT + AGENT_MOUNT + "/e2b_local")
    # A real root (not a chroot), so that the kernel's executable and modules show their template paths.
    linux.pivot_root(_KERNEL_ROOT, _KERNEL_ROOT + _OLD_ROOT)
    os.chdir("/")
    linux.umount(_OLD_ROOT)


@dataclass
class KernelSpec:
    """What the kernel zygote of a template starts as: its Python kernel's interpreter and variables."""

    python: str
    env: dict[str, str]

    def command(self) -> list[str]:
        """The template's Python, finding our code at its sandbox path."""
        boot = (f"import runpy, sys; sys.path.insert(0, {AGENT_MOUNT!r});"
                "runpy.run_module('e2b_local.zygote.kernels', run_name='__main__', alter_sys=True)")
        return [self.python, "-c", boot]

    def environment(self) -> dict[str, str]:
        """The zygote's environment: the kernelspec's variables, which modules read as they are imported
        (a kernel's whole environment is set by its fork)."""
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                **self.env}


# Layers never change once built (a changed one is a new directory), so each set is read once.
@functools.lru_cache(maxsize=16)
def python_kernel(lowers: tuple[str, ...]) -> KernelSpec | None:
    """The template's Python kernel (its ipykernel's kernelspec), if it has one."""
    for layer in lowers:
        try:
            with open(layer + PYTHON_KERNELSPEC) as f:
                spec = json.load(f)
            return KernelSpec(str(spec["argv"][0]), {str(k): str(v) for k, v in spec.get("env", {}).items()})
        except (FileNotFoundError, ValueError, KeyError, IndexError, AttributeError):
            continue
    return None
