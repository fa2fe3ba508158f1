"""Launches without an interpreter start each: one process imports the launcher once and forks it per sandbox.

A fresh interpreter for every sandbox would cost about 100 ms of CPU (Python's start and the
launcher's imports) before any of the launcher's own work, on every create that the warm pool cannot
serve. The fork server is started once, by the first launch of a server process, and stays
single-threaded: each of its forks is a fresh launcher process with nothing of the server's threads,
descriptors or locks, and runs `launcher.launch` in a new session of its own. Nothing of this
process reaches a sandbox: the launcher's own child hands the sandbox to a zygote (`zygotes`, which
this process starts and keeps, one per base layer) or executes bubblewrap, and either passes on only
the descriptors the launcher means to.

Requests come over a Unix socket pair from the server: the path of a launch spec, with the write
end of a pipe for the answer, one JSON object (the launcher's pids, or `{"error": ...}`). The fork
server exits when the server's end of the pair closes (when the server's process ends).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import e2b_local
from e2b_local.isolation.launcher import AGENT_ENV, LaunchSpec, launch, python_command
from e2b_local.isolation.reaping import reap_children
from e2b_local.isolation.zygotes import Zygotes, agent_root, kernel_root, python_kernel
from e2b_local.protocol import ZYGOTE_MERGE_VARIABLE

# A launch spec's path, as one datagram.
MAX_REQUEST = 4096


class LaunchError(RuntimeError):
    """The launcher could not start the sandbox."""


class ForkServer:
    """The server's side: starts the fork server when first needed (again if it went away) and asks it to launch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def launch(self, spec_file: Path) -> dict[str, int]:
        """Launch the sandbox described by `spec_file`; the launcher's `{"pid": ..., "slirp_pid": ...}`."""
        answer_r, answer_w = os.pipe2(os.O_CLOEXEC)
        try:
            self._send(os.fsencode(spec_file), answer_w)
            os.close(answer_w)
            answer_w = -1
            with os.fdopen(answer_r, "rb") as answer:
                answer_r = -1
                raw = answer.read()
        finally:
            for fd in (answer_r, answer_w):
                if fd >= 0:
                    os.close(fd)
        if not raw:
            raise LaunchError("sandbox launch failed: the launcher ended without an answer")
        result = json.loads(raw)
        if "error" in result:
            raise LaunchError(f"sandbox launch failed: {result['error']}")
        return {"pid": int(result["pid"]), "slirp_pid": int(result["slirp_pid"])}

    def _send(self, request: bytes, answer_w: int) -> None:
        with self._lock:
            # A second try only when the fork server is gone (killed, say): a fresh one gets the request.
            for attempt in range(2):
                if self._socket is None:
                    self._socket = _start()
                try:
                    socket.send_fds(self._socket, [request], [answer_w])
                    return
                except OSError:
                    self._socket.close()
                    self._socket = None
                    if attempt:
                        raise


def _start() -> socket.socket:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        # Never waited for here: it is a child of the server, whose reaper collects it when it exits.
        subprocess.Popen(
            [sys.executable, "-m", "e2b_local.isolation.forkserver", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(Path(e2b_local.__file__).parent.parent)},
        )
    ours.set_inheritable(False)
    return ours


# -- the fork server's process ---------------------------------------------------------------------
def _launch_one(spec: LaunchSpec, answer: int, zygote: socket.socket | None,
                kernels: socket.socket | None) -> None:
    """In a fork: one launcher run, its answer written to `answer`; never returns."""
    code = 1
    try:
        # The launcher's own children (bubblewrap's parent, slirp4netns) are waited for as usual.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        result: dict[str, object] = dict(launch(spec, zygote, kernels))
        code = 0
    except BaseException as exc:  # the fork must never return into the serving loop
        result = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        os.write(answer, json.dumps(result).encode())
    finally:
        os._exit(code)


def serve(requests: socket.socket) -> None:
    """Fork a launcher for each request until the server's end of `requests` closes."""
    # Forks that have answered exit at once; collected as they do, so that none stays a zombie.
    signal.signal(signal.SIGCHLD, lambda *_: reap_children())
    zygotes = Zygotes()
    while True:
        try:
            request, fds, _, _ = socket.recv_fds(requests, MAX_REQUEST, 1)
        except ConnectionError:
            return
        if not request:
            for fd in fds:
                os.close(fd)
            return
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        answer = fds[0]
        os.set_inheritable(answer, False)
        try:
            with open(os.fsdecode(request)) as f:
                spec = LaunchSpec(**json.load(f))
            zygote = kernels = None
            if spec.agent_start == "fork":
                merge = {ZYGOTE_MERGE_VARIABLE: "1"} if spec.merge_pages else {}
                zygote = zygotes.get(("agent", spec.base_layer, spec.agent_package, str(spec.merge_pages)),
                                     python_command(spec, "e2b_local.zygote"), {**AGENT_ENV, **merge},
                                     functools.partial(agent_root, spec.base_layer, spec.agent_package))
                if spec.fork_kernels and (kernel := python_kernel(tuple(spec.lowers))) is not None:
                    kernels = zygotes.get(("kernels", *spec.lowers, spec.agent_package, str(spec.merge_pages)),
                                          kernel.command(), {**kernel.environment(), **merge},
                                          functools.partial(kernel_root, spec.lowers, spec.agent_package))
        except (OSError, ValueError, TypeError) as exc:
            os.write(answer, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            os.close(answer)
            continue
        if os.fork() == 0:
            requests.close()
            _launch_one(spec, answer, zygote, kernels)
        os.close(answer)


def main() -> None:
    requests = socket.socket(fileno=int(sys.argv[1]))
    requests.set_inheritable(False)
    serve(requests)


if __name__ == "__main__":
    main()
