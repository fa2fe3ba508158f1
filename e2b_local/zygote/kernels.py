"""The kernel zygote: a template's Python with ipykernel and IPython imported, forked for each Python kernel.

Most of a Python kernel's start is importing ipykernel, IPython and ZeroMQ (0.4 s of 0.6 s). The
kernel zygote does it once per template, and each kernel of each sandbox is a fork that shares those
pages with it until it writes to them.

It runs the template's own /usr/bin/python3, as host root, in a mount namespace whose root is the
template's layers (read-only), so that modules have the paths a kernel sees. Two kinds of message:

- on its request socket, from a sandbox's agent-to-be before any code of the sandbox runs: a
  registration, the sandbox's namespaces, workload cgroup and seccomp filter, with a channel;
- on a registered channel, from that sandbox's agent: a kernel to start (argv, cwd, environment,
  user), with a descriptor for the answer and the kernel's log.

Whatever the agent sends, the fork joins only the namespaces the channel was registered with. It
becomes the requested user of the sandbox with the capabilities, filter and limits a process the
agent executes would have, and forks twice into the sandbox's pid namespace: the kernel, pid N
there and a child of the agent once its parent has exited, answers "pid N" and runs as `python -m`
would have started it.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import resource
import runpy
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

from e2b_local import linux
from e2b_local.protocol import AGENT_MOUNT
from e2b_local.zygote.forks import fail, let_merge, merge_asked, read_all, reap, request_socket

# A registration's descriptors, in order; then the sandbox's cgroup.procs files, and its workload's.
REGISTRATION_FDS = ("channel", "user", "mnt", "net", "ipc", "uts", "pid", "seccomp")
NAMESPACES = {"user": linux.CLONE_NEWUSER, "mnt": linux.CLONE_NEWNS, "net": linux.CLONE_NEWNET,
              "ipc": linux.CLONE_NEWIPC, "uts": linux.CLONE_NEWUTS, "pid": linux.CLONE_NEWPID}
# A kernel request: its JSON, with the answer's and the log's descriptors.
MAX_MESSAGE = 1 << 20
# What a Python kernel imports: ipykernel's launcher before its app starts, then the app (its
# debugger's debugpy, IPython's history database, completer, inspector, logger and extensions,
# tornado's queues, faulthandler).
PRELOAD = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "IPython", "ipykernel.debugger",
           "IPython.core.completerlib", "IPython.core.debugger", "IPython.core.logger", "IPython.core.oinspect",
           "IPython.extensions.storemagic", "IPython.utils.wildcard", "sqlite3", "tornado.gen",
           "tornado.platform.asyncio", "tornado.queues", "faulthandler")


@dataclass
class Registration:
    """One sandbox's channel and what every kernel it asks for joins."""

    channel: socket.socket
    fds: dict[str, int]
    # The cgroup.procs of the sandbox's cgroups, then of its workload cgroup when it has one (v1).
    cgroups: list[int]
    open_files: list[int]
    dropped_caps: list[int]

    @property
    def closed(self) -> bool:
        return self.channel.fileno() < 0

    def close(self) -> None:
        """Close the channel and the sandbox's descriptors."""
        self.channel.close()
        for fd in [*self.fds.values(), *self.cgroups]:
            with contextlib.suppress(OSError):
                os.close(fd)


# Variables that act as a Python starts or as those modules are imported (pydevd's and debugpy's):
# a kernel whose environment gives them other values than the zygote started with is not forked.
READ_AT_START = ("PYTHON", "PYDEVD", "DEBUGPY")


@dataclass
class Environment:
    """What the zygote's start saw of the variables in READ_AT_START, and what its imports set."""

    at_start: dict[str, str]
    set_by_imports: dict[str, str]

    def check(self, env: dict[str, str]) -> None:
        """Raise ValueError if a kernel started with `env` would have imported differently."""
        wanted = {k: v for k, v in env.items() if k.startswith(READ_AT_START) and k not in self.set_by_imports}
        if wanted != self.at_start:
            raise ValueError("the kernel's environment sets variables that act at a Python's start")

    def apply(self, env: dict[str, str]) -> None:
        """Make `env` the environment, with what the imports set where it has nothing of its own."""
        os.environ.clear()
        os.environ.update(env)
        for key, value in self.set_by_imports.items():
            os.environ.setdefault(key, value)


ENVIRONMENT = Environment({}, {})


def preload() -> None:
    """Import what a Python kernel imports, then keep the collector off the shared objects."""
    before = dict(os.environ)
    ENVIRONMENT.at_start.update((k, v) for k, v in before.items() if k.startswith(READ_AT_START))
    for name in PRELOAD:
        __import__(name)
    ENVIRONMENT.set_by_imports.update((k, v) for k, v in os.environ.items() if before.get(k) != v)
    # Forks of a process with threads would lack them: nothing imported may have started one.
    if threading.active_count() != 1:
        raise RuntimeError(f"importing the kernel's modules started threads: {threading.enumerate()}")
    gc.freeze()


def serve(requests: socket.socket, merge: bool) -> None:
    """Register sandboxes and fork their kernels, until the fork server's end of `requests` closes.

    One request of a channel at a time: the channel is not read again until the fork for its last
    request has exited, so that no sandbox can keep this process forking for it. `merge`: whether
    each kernel lets KSM merge the memory it inherited (see `forks.let_merge`).
    """
    # SIGCHLD wakes the selector through this pipe; exited forks are collected in the loop.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(requests, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    busy: dict[int, Registration] = {}  # fork's pid -> the registration it serves
    while True:
        for key, _ in selector.select():
            if key.fileobj is requests:
                message, fds, _, _ = socket.recv_fds(requests, 4096, len(REGISTRATION_FDS) + 8)
                if not message:
                    return
                registration = _register(message, fds)
                if registration is not None:
                    selector.register(registration.channel, selectors.EVENT_READ, registration)
                continue
            if key.fileobj == wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                for pid in reap():
                    served = busy.pop(pid, None)
                    if served is not None and not served.closed:
                        selector.register(served.channel, selectors.EVENT_READ, served)
                continue
            registration = key.data
            try:
                message, fds, _, _ = socket.recv_fds(registration.channel, MAX_MESSAGE, 2)
            except OSError:
                message, fds = b"", []
            selector.unregister(registration.channel)
            if not message:  # the agent is gone
                registration.close()
                continue
            pid = os.fork()
            if pid == 0:
                requests.close()
                _spawn(registration, message, fds, merge)
            busy[pid] = registration
            for fd in fds:
                os.close(fd)


def _register(message: bytes, fds: list[int]) -> Registration | None:
    if len(fds) < len(REGISTRATION_FDS):
        for fd in fds:
            os.close(fd)
        return None
    details = json.loads(message)
    named = dict(zip(REGISTRATION_FDS, fds, strict=False))
    channel = socket.socket(fileno=named.pop("channel"))
    channel.set_inheritable(False)
    return Registration(channel, named, fds[len(REGISTRATION_FDS):], details["open_files"], details["dropped_caps"])


def _spawn(registration: Registration, message: bytes, fds: list[int], merge: bool) -> NoReturn:
    """In a fork of the zygote: join the sandbox and fork the kernel into its pid namespace; never returns."""
    answer = fds[0] if fds else -1
    try:
        # The sandbox's cgroups and its workload's first (through descriptors host root opened): every
        # page this fork copies from the zygote is the kernel's, and is charged to the sandbox.
        for fd in registration.cgroups:
            os.write(fd, b"0")
        # Nothing of the zygote's signal handling goes on into the kernel.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if len(fds) != 2:
            raise ValueError("a kernel request carries the answer's and the log's descriptors")
        request = json.loads(message)
        ENVIRONMENT.check(request["env"])
        uid, gid, groups = int(request["uid"]), int(request["gid"]), [int(g) for g in request["groups"]]
        seccomp = read_all(registration.fds["seccomp"])
        last_cap = linux.last_capability()
        # As host root: every namespace, the user namespace last; nothing of the sandbox's files is
        # opened before it.
        for name in ("mnt", "net", "ipc", "uts", "pid", "user"):
            linux.setns(registration.fds[name], NAMESPACES[name])
        registration.close()
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        # What a process the agent executes as this user has: no capability but the inheritable
        # set (the agent's), the same bounding set. Root keeps them all, ambient ones too, as the
        # agent's own children do.
        keep = set(range(last_cap + 1)) - set(registration.dropped_caps)
        if uid == 0:
            linux.set_capabilities(keep, last_cap)
        else:
            linux.drop_bounding(keep, last_cap)
            linux.capset(set(), keep)
        # Forked twice: an orphan goes to the init of its parent's pid namespace, so only a kernel
        # whose parent is in the sandbox's (and exits) becomes the agent's child.
        # The middle one is waited for here, so that no exited process of ours is left to anyone else.
        if (middle := os.fork()) == 0:
            if os.fork() == 0:
                _become_kernel(request, answer, fds[1], seccomp, registration.open_files, merge)
            os._exit(0)
        os.waitpid(middle, 0)
    except BaseException as exc:  # the fork must never return into the zygote's loop
        fail(answer, exc)
    os._exit(0)


def _become_kernel(request: dict[str, Any], answer: int, log: int, seccomp: bytes,
                   open_files: list[int], merge: bool) -> NoReturn:
    """The kernel's own process, in the sandbox's pid namespace: set up as `python -m` would start it."""
    try:
        argv = request["argv"]
        if argv[:2] != [sys.executable, "-m"] or len(argv) < 3:
            raise ValueError(f"only `{sys.executable} -m MODULE` kernels are forked, not {argv[:3]}")
        os.setsid()
        # Changing credentials made this process undumpable, which its exec would have undone.
        linux.prctl(linux.PR_SET_DUMPABLE, 1, what="setting dumpable")
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        ENVIRONMENT.apply(request["env"])
        os.chdir(request["cwd"])
        linux.close_descriptors_but({0, 1, 2, answer})
        resource.setrlimit(resource.RLIMIT_NOFILE, tuple(open_files))
        linux.load_seccomp(seccomp)
        # Reported once the agent is its parent (the first fork, outside this pid namespace, has
        # exited), so that the agent may wait for it from the start.
        while os.getppid() != 1:
            time.sleep(0.0005)
        os.write(answer, f"pid {os.getpid()}".encode())
        os.close(answer)
    except BaseException as exc:
        fail(answer, exc)
    # After the answer: the kernel's start need not wait for the marking.
    if merge:
        let_merge()
    code = 0
    try:
        _as_python_m(argv[2], argv[3:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _as_python_m(module: str, args: list[str]) -> None:
    """Run `module` with `args` as `python -m` does, in this process as the zygote left it."""
    import site

    # `-m` puts the working directory first on the path; the zygote's own entries go.
    sys.path[:] = [os.getcwd(), *(p for p in sys.path if p not in ("", AGENT_MOUNT))]
    # The user's site directory follows the user's HOME, as at a fresh start.
    site.USER_BASE = site.USER_SITE = None
    if site.ENABLE_USER_SITE and os.path.isdir(user_site := site.getusersitepackages()):
        site.addsitedir(user_site)
    sys.argv = ["-m", *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def main() -> None:
    requests = request_socket()
    merge = merge_asked()
    preload()
    serve(requests, merge)


if __name__ == "__main__":
    main()
