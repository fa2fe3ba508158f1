"""The agent's half of `sudo` in a sandbox (the other half, `sudo_shim.py`, is mounted over /usr/bin/sudo).

Every process of a sandbox runs with the no-new-privileges flag, which stays: setuid programs do not
raise privileges there. E2B's `user` has passwordless sudo, so sudo is done by the agent instead,
which already is the sandbox's root and can give nothing beyond it. The shim connects to the
agent's abstract socket (it exists only in the sandbox's network namespace) and hands over its
standard descriptors with the request; the agent identifies the caller by the socket's peer
credentials, asks the sandbox's own sudoers policy (the pristine sudo binary, run as root with `-l`)
whether that user may run the command, and runs it with the caller's descriptors, in a session of
its own in the workload cgroup. Signals the shim gets are passed on to the command's process group;
the command's exit status goes back to the shim, which exits with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import struct
from typing import Any

from e2b_local.agent.users import UnknownUserError, User
from e2b_local.agent.workload import Workload
from e2b_local.protocol import BASE_MOUNT

log = logging.getLogger("e2b_local.agent")

ADDRESS = "\0e2b-local-sudo"
# The real sudo of the base layer, used only to read the sandbox's policy (`sudo -l`, run as root).
POLICY_SUDO = BASE_MOUNT + "/usr/bin/sudo"
# Debian's `secure_path`.
SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What sudo's env_reset keeps of the caller's environment.
KEPT_VARIABLES = ("TERM", "COLORTERM", "DISPLAY", "XAUTHORITY", "LANG", "LANGUAGE", "LS_COLORS", "COLORS", "TZ")
REQUEST_MAX = 1 << 20
_PEERCRED = struct.Struct("3i")


class SudoError(Exception):
    """A request refused before its command started (sent to the shim as its error line)."""


class SudoBroker:
    """Serves the sandbox's `sudo` requests on the agent's abstract socket."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self._listener: socket.socket | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (a failure is logged: the sandbox then has no sudo, everything else works)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.bind(ADDRESS)
        except OSError as exc:
            sock.close()
            log.warning("sudo is not available in this sandbox: %s", exc)
            return
        sock.listen(64)
        self._listener = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            task = asyncio.ensure_future(_Session(self.workload, conn).serve())
            self._sessions.add(task)
            task.add_done_callback(self._sessions.discard)


class _Session:
    """One `sudo` invocation, from its request to the command's exit status."""

    def __init__(self, workload: Workload, conn: socket.socket) -> None:
        self.workload = workload
        self.conn = conn
        self.proc: asyncio.subprocess.Process | None = None
        self.buffer = b""

    def _signals(self) -> None:
        # After the request, each line the shim sends is a signal it received.
        try:
            data = self.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            return
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                signum = int(line)
                if self.proc is not None and self.proc.returncode is None and 0 < signum < signal.NSIG:
                    os.killpg(self.proc.pid, signum)

    async def _reply(self, answer: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            await loop.sock_sendall(self.conn, json.dumps(answer).encode() + b"\n")

    async def serve(self) -> None:
        """Run the request's command and send back its exit status."""
        loop = asyncio.get_running_loop()
        fds: list[int] = []
        try:
            try:
                uid = _PEERCRED.unpack(self.conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                            _PEERCRED.size))[1]
                message, fds = await _receive(self.conn)
                request = json.loads(message)
                if len(fds) != 3:
                    raise SudoError("expected the caller's standard input, output and error")
                self.proc = await self._spawn(uid, request, fds)
            except SudoError as exc:
                await self._reply({"error": str(exc)})
                return
            except (OSError, ValueError, KeyError, TypeError) as exc:
                await self._reply({"error": f"cannot run the command: {exc!r}"})
                return
            finally:
                for fd in fds:
                    os.close(fd)
            loop.add_reader(self.conn.fileno(), self._signals)
            try:
                code = await self.proc.wait()
            finally:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(self.conn.fileno())
            await self._reply({"exit": code})
        finally:
            self.conn.close()

    async def _spawn(self, uid: int, request: dict[str, Any], fds: list[int]) -> asyncio.subprocess.Process:
        try:
            caller = pwd.getpwuid(uid).pw_name
        except KeyError:
            raise SudoError(f"you do not exist in the passwd database (uid {uid})") from None
        try:
            target = User.lookup(str(request.get("user") or "root"))
        except UnknownUserError:
            raise SudoError(f"unknown user {request.get('user')}") from None
        argv = [str(a) for a in request.get("argv") or []]
        mode = request.get("mode", "run")
        caller_env = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
        shell = _shell(target)
        cwd = str(request.get("cwd") or "/")
        if mode == "login":
            argv = [shell, "-l", "-c", shlex.join(argv)] if argv else [shell, "-l"]
            cwd = target.home
        elif mode == "shell":
            argv = [caller_env.get("SHELL") or shell, "-c", shlex.join(argv)] if argv else [caller_env.get("SHELL")
                                                                                           or shell]
        if not argv:
            raise SudoError("no command given")
        if shutil.which(argv[0], path=SECURE_PATH) is None:
            raise SudoError(f"{argv[0]}: command not found")
        if uid != 0:
            await _check_policy(caller, target.name, argv)
        env = dict(caller_env) if request.get("preserve_env") else {
            k: v for k, v in caller_env.items() if k in KEPT_VARIABLES or k.startswith("LC_")}
        env.update(PATH=SECURE_PATH, HOME=target.home, USER=target.name, LOGNAME=target.name, SHELL=shell,
                   SUDO_USER=caller, SUDO_UID=str(uid), SUDO_GID=str(pwd.getpwuid(uid).pw_gid),
                   SUDO_COMMAND=shlex.join(argv))
        if not os.path.isdir(cwd):
            cwd = target.home if os.path.isdir(target.home) else "/"
        enter_workload = self.workload.enter

        def prepare_child() -> None:
            enter_workload()
            os.setgroups(list(target.groups))
            os.setgid(target.gid)
            os.setuid(target.uid)

        try:
            return await asyncio.create_subprocess_exec(
                *argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], cwd=cwd, env=env, start_new_session=True,
                preexec_fn=prepare_child)
        except FileNotFoundError:
            raise SudoError(f"{argv[0]}: command not found") from None
        except PermissionError:
            raise SudoError(f"unable to execute {argv[0]}: Permission denied") from None


async def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    """The shim's request line and the descriptors that came with it."""
    loop = asyncio.get_running_loop()
    message, fds = b"", []
    while not message.endswith(b"\n"):
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(conn.fileno(), _settle, ready)
        try:
            async with asyncio.timeout(10):
                await ready
        finally:
            loop.remove_reader(conn.fileno())
        try:
            chunk, new_fds, _flags, _addr = socket.recv_fds(conn, REQUEST_MAX, 3)
        except (BlockingIOError, InterruptedError):
            continue
        fds += new_fds
        if not chunk:
            break
        message += chunk
        if len(message) > REQUEST_MAX:
            raise SudoError("request too large")
    return message, fds


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _check_policy(caller: str, target: str, argv: list[str]) -> None:
    """Refuse unless the sandbox's sudoers lets `caller` run `argv` as `target` without a password."""
    proc = await asyncio.create_subprocess_exec(
        POLICY_SUDO, "-n", "-l", "-U", caller, "-u", target, "--", *argv,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": SECURE_PATH})
    if await proc.wait() != 0:
        raise SudoError(f"{caller} is not allowed to run '{shlex.join(argv)}' as {target} in this sandbox")


def _shell(user: User) -> str:
    try:
        return pwd.getpwnam(user.name).pw_shell or "/bin/sh"
    except KeyError:
        return "/bin/sh"
