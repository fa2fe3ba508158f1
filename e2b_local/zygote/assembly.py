"""What makes a sandbox of a staged root: the mounts, names, capabilities and filter around its agent.

One description serves both ways of starting an agent. The launcher turns it into bubblewrap's
options when it executes a fresh agent, and a zygote's fork carries it out itself (`become_pid1`),
step for step as bubblewrap does, so that the two sandboxes cannot differ: the same mounts in the same
order with the same flags, the same /dev, hostname, capabilities, session, environment and seccomp
filter, and the agent as pid 1 of new pid, ipc, uts and mount namespaces.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from e2b_local import linux

# The devices bubblewrap's --dev gives a sandbox, bound from the host's /dev.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# The links and directories --dev adds next to them.
DEVICE_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                "stderr": "/proc/self/fd/2", "core": "/proc/kcore"}
DEVPTS_OPTIONS = "newinstance,ptmxmode=0666,mode=620"
# statvfs flags, mapped to the mount flags a remount must repeat (the kernel refuses to clear locked ones).
_ST_RELATIME = 4096
_KEPT_FLAGS = (linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC | linux.MS_SYNCHRONOUS
               | linux.MS_MANDLOCK | linux.MS_NOATIME | linux.MS_NODIRATIME)


@dataclass
class Mount:
    """One mount of the sandbox: `bind` / `ro-bind` of `source` (a staged path), `proc` or `dev`."""

    kind: str
    destination: str
    source: str = ""


@dataclass
class Assembly:
    """Everything around the agent that a sandbox's namespaces need, in bubblewrap's order."""

    # The mounts onto `root` (the staged root, which becomes "/"), in order.
    root: str
    mounts: list[Mount]
    hostname: str
    # Capabilities everything in the sandbox lacks, root included.
    dropped_caps: list[int]
    env: dict[str, str]
    cwd: str = "/"
    # Open files (soft, hard) of the agent and everything it starts.
    open_files: list[int] = field(default_factory=lambda: [1024, 1024])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Assembly:
        return cls(**{**data, "mounts": [Mount(**m) for m in data["mounts"]]})


def _remount(path: str, flags: int) -> None:
    """Add `flags` to the mount at `path`, keeping the flags it has (locked ones must be repeated)."""
    st = os.statvfs(path)
    kept = st.f_flag & _KEPT_FLAGS | (linux.MS_RELATIME if st.f_flag & _ST_RELATIME else 0)
    linux.mount("none", path, "", linux.MS_REMOUNT | linux.MS_BIND | kept | flags, "")


def _mount_point(path: str, like_file: bool) -> None:
    """Create `path` (and its parents) for a mount, as a file or a directory, unless it exists."""
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if like_file:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
    else:
        os.makedirs(path, mode=0o755, exist_ok=True)


def _bind(source: str, target: str, flags: int) -> None:
    _mount_point(target, not os.path.isdir(source))
    linux.mount(source, target, "", linux.MS_BIND | linux.MS_REC, "")
    _remount(target, flags)


# The assembly's own tmpfs, which becomes "/" while the sandbox's mounts are made (see `mount_all`).
NEW_ROOT = "/newroot"
OLD_ROOT = "/oldroot"
SOURCES = "/sources"
PROC = "/proc"
DEVICE_NODES = "/devices"


def mount_all(assembly: Assembly, scratch: str) -> None:
    """In a fresh mount namespace of the sandbox's user namespace: make its mounts and pivot into them.

    `scratch` is an empty directory, where a tmpfs of our own becomes the root while the mounts are
    made. What the mounts need of the launcher's namespace (the staged sources, the host's devices, a
    proc of the new pid namespace) is bound into it first; then the launcher's namespace is detached,
    so that no path of the sandbox's own files (links included) can lead a mount outside the tmpfs.
    Needs the pid namespace in place: this process must be pid 1 of it.
    """
    linux.mount("none", "/", "", linux.MS_REC | linux.MS_PRIVATE, "")
    linux.mount("tmpfs", scratch, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0700")
    for name in (NEW_ROOT, OLD_ROOT, SOURCES, PROC, DEVICE_NODES):
        os.mkdir(scratch + name, 0o700)
    linux.mount(assembly.root, scratch + NEW_ROOT, "", linux.MS_BIND | linux.MS_REC, "")
    for index, item in enumerate(assembly.mounts):
        if item.source:
            _mount_point(staged := f"{scratch}{SOURCES}/{index}", not os.path.isdir(item.source))
            linux.mount(item.source, staged, "", linux.MS_BIND | linux.MS_REC, "")
    for name in DEVICES:
        _mount_point(node := f"{scratch}{DEVICE_NODES}/{name}", True)
        linux.mount(f"/dev/{name}", node, "", linux.MS_BIND, "")
    # Here, while the host's /proc is still in this namespace: the kernel mounts a new proc only
    # where one is already fully visible.
    linux.mount("proc", scratch + PROC, "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, "")
    linux.pivot_root(scratch, scratch + OLD_ROOT)
    os.chdir("/")
    linux.umount(OLD_ROOT)
    os.rmdir(OLD_ROOT)
    _remount(NEW_ROOT, linux.MS_NOSUID | linux.MS_NODEV)
    for index, item in enumerate(assembly.mounts):
        target = NEW_ROOT + item.destination
        if item.kind in ("bind", "ro-bind"):
            readonly = linux.MS_RDONLY if item.kind == "ro-bind" else 0
            _bind(f"{SOURCES}/{index}", target, linux.MS_NOSUID | linux.MS_NODEV | readonly)
        elif item.kind == "proc":
            _mount_point(target, False)
            linux.mount(PROC, target, "", linux.MS_BIND | linux.MS_REC, "")
        elif item.kind == "dev":
            _make_dev(target)
        else:
            raise ValueError(f"unknown mount kind {item.kind!r}")
    os.chdir(NEW_ROOT)
    linux.pivot_root(".", ".")
    linux.umount(".")
    os.chdir("/")


def _make_dev(target: str) -> None:
    """A /dev as bubblewrap's --dev makes it: a tmpfs with the host's harmless devices and a private devpts."""
    _mount_point(target, False)
    linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755")
    for name in DEVICES:
        _mount_point(node := f"{target}/{name}", True)
        linux.mount(f"{DEVICE_NODES}/{name}", node, "", linux.MS_BIND, "")
        _remount(node, linux.MS_NOSUID)
    for name, link in DEVICE_LINKS.items():
        os.symlink(link, f"{target}/{name}")
    os.mkdir(f"{target}/shm", 0o755)
    os.mkdir(f"{target}/pts", 0o755)
    linux.mount("devpts", f"{target}/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC, DEVPTS_OPTIONS)
    os.symlink("pts/ptmx", f"{target}/ptmx")


def finish(assembly: Assembly, seccomp: bytes, last_cap: int, keep: set[int]) -> None:
    """The last steps, once mounted: hostname, capabilities, session, environment, descriptors, limits, filter.

    Every descriptor but `keep` is closed (stdin becomes /dev/null); the seccomp filter comes last,
    since it forbids what the steps before it do.
    """
    socket.sethostname(assembly.hostname)
    linux.set_capabilities(set(range(last_cap + 1)) - set(assembly.dropped_caps), last_cap)
    # Changing credentials made this process undumpable, which an exec would have undone: its /proc
    # files would belong to host root, and its children could not write their own (oom_score_adj).
    linux.prctl(linux.PR_SET_DUMPABLE, 1, what="setting dumpable")
    os.setsid()
    os.environ.clear()
    os.environ.update(assembly.env)
    os.environ["PWD"] = assembly.cwd
    os.chdir(assembly.cwd)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    linux.close_descriptors_but(keep | {0, 1, 2})
    resource.setrlimit(resource.RLIMIT_NOFILE, tuple(assembly.open_files))
    linux.load_seccomp(seccomp)
