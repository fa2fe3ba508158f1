"""A Jupyter kernel for Bash that answers in milliseconds (installed in the code-interpreter template).

The stock `bash_kernel` drives an interactive Bash through pexpect, which waits tens of milliseconds
on every read. This kernel keeps one non-interactive Bash per kernel, fed through a pipe: each cell
is written to a private file and sourced (so `cd`, variables and functions persist), then a marker
carrying `$?` is printed on stdout and on stderr. Output is forwarded as it is read, stdout and
stderr separately, and the cell ends when both markers have arrived.

Interrupts: the agent sends SIGINT to the kernel's process group. This Python process ignores it;
Bash runs `trap 'return 130' INT`, which abandons the sourced cell, and the commands it was running
receive the signal themselves. A cell that exits with a non-zero status reports an error named
`ExitCodeError` whose value is the status; a shell that exits (`exit`) is started again.

Run as `python3 bash_kernel.py -f CONNECTION_FILE` with the template's Python, where ipykernel is
installed.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
from typing import Any

from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel

# Bytes read from the shell's pipes at a time.
READ_SIZE = 65536
# Commands run once in every new shell: interrupts abandon the current cell (outside a cell the
# `return` fails quietly), and programs that would page their output print it instead.
SHELL_SETUP = "trap 'return 130 2>/dev/null' INT\nexport PAGER=cat GIT_PAGER=cat\n"


class _MarkerSplitter:
    """Splits a byte stream into output and the end-of-cell marker, which may arrive in pieces."""

    def __init__(self, marker: bytes, with_status: bool) -> None:
        self.marker = marker
        self.with_status = with_status
        self.pending = b""
        self.status: int | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Return the output contained in `data`; sets `done` (and `status`) once the marker is complete."""
        data = self.pending + data
        self.pending = b""
        index = data.find(self.marker)
        if index >= 0:
            rest = data[index + len(self.marker):]
            end = rest.find(b"\n")
            if end < 0:
                self.pending = data[index:]
                return data[:index]
            if self.with_status:
                self.status = int(rest[:end] or b"0")
            self.done = True
            return data[:index]
        # Hold back a tail that could be the beginning of the marker.
        for size in range(min(len(self.marker) - 1, len(data)), 0, -1):
            if self.marker.startswith(data[-size:]):
                self.pending = data[-size:]
                return data[:-size]
        return data


class BashKernel(Kernel):
    """The kernel: one persistent Bash process."""

    implementation = "e2b-local-bash"
    implementation_version = "1.0"
    language = "bash"
    language_version = "5"
    language_info = {  # noqa: RUF012 - the shape ipykernel's Kernel declares
        "name": "bash",
        "mimetype": "text/x-sh",
        "file_extension": ".sh",
        "codemirror_mode": "shell",
        "pygments_lexer": "bash",
    }
    banner = "Bash (e2b-local)"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cells = tempfile.mkdtemp(prefix="e2b-bash-")
        self._token = secrets.token_hex(16).encode()
        self._shell: subprocess.Popen[bytes] | None = None

    # SIGINT is meant for the shell and its commands (they share this process group); ipykernel's
    # default of raising KeyboardInterrupt while a request is handled would break the event loop.
    def pre_handler_hook(self) -> None:
        """Keep ignoring SIGINT while a request is handled."""

    def post_handler_hook(self) -> None:
        """Nothing to restore (see pre_handler_hook)."""

    def _start_shell(self) -> subprocess.Popen[bytes]:
        # This process ignores SIGINT, and a signal ignored when a shell starts cannot be trapped:
        # `env --default-signal` gives Bash the default disposition back.
        shell = subprocess.Popen(
            ["env", "--default-signal=INT", "bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
        )
        assert shell.stdin is not None
        shell.stdin.write(SHELL_SETUP.encode())
        return shell

    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: dict[str, Any] | None = None, allow_stdin: bool = False,
                         *, cell_meta: dict[str, Any] | None = None, cell_id: str | None = None) -> dict[str, Any]:
        """Run one cell in the shell, streaming its output."""
        if self._shell is None or self._shell.poll() is not None:
            self._shell = self._start_shell()
        shell = self._shell
        assert shell.stdin is not None and shell.stdout is not None and shell.stderr is not None
        path = os.path.join(self._cells, "cell.sh")
        with open(path, "w") as f:
            f.write(code if code.endswith("\n") else code + "\n")
        # The marker: the token between two ASCII record separators (octal 036 in printf's format).
        marker = b"\x1e" + self._token + b"\x1e"
        token = self._token.decode()
        command = (f"source {shlex.quote(path)} </dev/null; printf '\\036{token}\\036%d\\n' $?;"
                   f" printf '\\036{token}\\036\\n' >&2\n")
        with contextlib.suppress(BrokenPipeError):
            shell.stdin.write(command.encode())
        status = await self._collect(shell, marker, silent)
        if status is None:
            # The shell is gone (`exit`, or killed): report its status; the next cell starts a new one.
            status = shell.poll()
            if status is None:
                shell.kill()
                status = shell.wait()
            self._shell = None
        if status != 0:
            content = {"ename": "ExitCodeError", "evalue": str(status), "traceback": []}
            if not silent:
                self.send_response(self.iopub_socket, "error", content)
            return {"status": "error", "execution_count": self.execution_count, **content}
        return {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}

    async def _collect(self, shell: subprocess.Popen[bytes], marker: bytes, silent: bool) -> int | None:
        """Forward output until both markers arrive; the cell's status, or None if the shell ended."""
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        streams = {
            shell.stdout.fileno(): ("stdout", _MarkerSplitter(marker, True)),  # type: ignore[union-attr]
            shell.stderr.fileno(): ("stderr", _MarkerSplitter(marker, False)),  # type: ignore[union-attr]
        }
        decoders = {fd: codecs.getincrementaldecoder("utf-8")(errors="replace") for fd in streams}
        open_fds = set(streams)

        def readable(fd: int) -> None:
            name, splitter = streams[fd]
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                open_fds.discard(fd)
                if not finished.done():
                    finished.set_result(None)
                return
            text = decoders[fd].decode(splitter.feed(data))
            if text and not silent:
                self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})
            if splitter.done:
                loop.remove_reader(fd)
                open_fds.discard(fd)
                if not open_fds and not finished.done():
                    finished.set_result(streams[shell.stdout.fileno()][1].status)  # type: ignore[union-attr]

        for fd in streams:
            os.set_blocking(fd, False)
            loop.add_reader(fd, readable, fd)
        try:
            return await finished
        finally:
            for fd in open_fds:
                loop.remove_reader(fd)

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        """Stop the shell and remove the cell files."""
        if self._shell is not None and self._shell.poll() is None:
            self._shell.kill()
        shutil.rmtree(self._cells, ignore_errors=True)
        return {"status": "ok", "restart": restart}

    async def do_is_complete(self, code: str) -> dict[str, Any]:
        """Ask Bash itself whether the code parses."""
        result = subprocess.run(["bash", "-n"], input=code.encode(), capture_output=True)
        return {"status": "complete" if result.returncode == 0 else "incomplete", "indent": ""}


if __name__ == "__main__":
    # Keep ignoring SIGINT from the start: the agent interrupts the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    IPKernelApp.launch_instance(kernel_class=BashKernel)
