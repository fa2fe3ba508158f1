"""Run the agent: `python -m e2b_local.agent` inside a sandbox (the launcher starts it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.config import Config
from uvicorn.server import Server

from e2b_local.agent import trust
from e2b_local.agent.interpreter_view import InterpreterSandbox
from e2b_local.agent.reaper import install_reaper, release_reaper
from e2b_local.agent.state import SandboxState
from e2b_local.agent.users import Accounts
from e2b_local.agent.workload import Workload
from e2b_local.interpreter.app import InterpreterApp, ships_kernels
from e2b_local.interpreter.forking import KernelForker
from e2b_local.protocol import AGENT_FD_VARIABLE, CODE_INTERPRETER_PORT, EGRESS_CA_VARIABLE

if TYPE_CHECKING:
    from e2b_local.agent.app import AgentApp

# In a sandbox `uvicorn` is a bare package (see launcher.BARE_PACKAGES): its __init__, skipped because it
# imports the command line (click, the process supervisors), would give uvicorn's own modules these names.
uvicorn.Config, uvicorn.Server = Config, Server

# Idle connections from the host are kept this long (the host lets them go sooner: upstream.py).
KEEP_ALIVE_SECONDS = 600


# How often an agent's server wakes by itself: to refresh its Date header.
TICK_SECONDS = 1.0


class AgentServer(Server):
    """uvicorn without its signal handlers (the agent must handle no signal at all, see `main`) and
    without its tenth-of-a-second tick.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn wakes ten times a second to see whether it should stop; an agent never stops (its
        # sandbox is killed), and five hundred idle sandboxes would wake the machine 10,000 times a
        # second. Each tick is given a counter uvicorn takes for a whole second (the Date header).
        while not await self.on_tick(0):
            await asyncio.sleep(TICK_SECONDS)


def drop_signal_handlers() -> None:
    """Leave every signal at its default or ignored disposition.

    The agent is pid 1 of its sandbox: the kernel discards a signal sent to it from inside the
    sandbox unless it has a handler for it, so without handlers nothing inside can stop it (Python
    itself installs one for SIGINT). The host stops sandboxes with SIGKILL through the cgroup.
    """
    for signum in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError):
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)


def main() -> None:
    """Serve the sandbox's requests on the socket the launcher handed over, until the sandbox ends."""
    drop_signal_handlers()
    workload = Workload.take()
    # The launcher binds the agent's socket outside the sandbox and hands it over as a descriptor.
    fd = int(os.environ.pop(AGENT_FD_VARIABLE))
    # Nothing the agent starts may inherit it.
    os.set_inheritable(fd, False)
    state = SandboxState()
    authority = os.environ.pop(EGRESS_CA_VARIABLE, None)
    if authority:
        state.trust_env = trust.install(authority)
    asyncio.run(start(fd, state, workload, KernelForker.take()))


async def start(fd: int, state: SandboxState, workload: Workload, forker: KernelForker) -> None:
    """Build the agent's services and serve them on `fd`.

    In a code-interpreter sandbox the Python kernel is started first, and the envd services (most of
    the agent's own start: the SDK's Connect code and protobuf) are imported while it starts, on
    another CPU when there is one: a fresh sandbox's first run_code then waits for the kernel alone.
    """
    interpreter = InterpreterApp(InterpreterSandbox(state, Accounts(state), workload, forker))
    reaper = install_reaper(asyncio.get_running_loop())
    try:
        if ships_kernels():
            await interpreter.prestart()
        # Imported only now (see above), while the kernel starts.
        from e2b_local.agent.app import AgentApp

        app = AgentApp(state, workload, interpreter)
        await app.sudo.start()
        await serve(app, fd)
    finally:
        release_reaper(reaper)


def interpreter_listener() -> socket.socket:
    """The code interpreter's own port inside the sandbox, where E2B's server listens (0.0.0.0:49999)."""
    # TCP by name, so that asyncio turns Nagle's algorithm off on its connections (see cli._bind).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", CODE_INTERPRETER_PORT))
    sock.listen(128)
    return sock


async def serve(app: AgentApp, fd: int) -> None:
    """Serve requests on `fd` until the sandbox ends.

    In a code-interpreter sandbox the interpreter also answers programs of the sandbox on its port,
    as on E2B. Being part of pid 1, it cannot be killed from inside; its kernels are replaced when
    they die (see `interpreter.contexts`). The reaper installed by `start` waits for every child
    (orphans too), as the sandbox's pid 1 must.
    """
    # No Date or Server header on answers to the host: its server adds its own (a client would get two).
    servers = [AgentServer(_config(app, fd=fd, date_header=False, server_header=False)).serve()]
    if ships_kernels():
        try:
            listener = interpreter_listener()
        except OSError as exc:  # the host reaches the interpreter through the agent's socket anyway
            print(f"e2b-local agent: cannot listen on port {CODE_INTERPRETER_PORT}: {exc}", flush=True)
        else:
            servers.append(AgentServer(_config(app.interpreter)).serve(sockets=[listener]))
    await asyncio.gather(*servers)


def _config(app: Any, **options: Any) -> Config:
    """The settings both of the agent's servers share, and `options`."""
    # Connections are kept open between requests: the host's, and those of programs in the sandbox.
    return Config(app, log_level="warning", access_log=False, lifespan="off", http="httptools",
                  timeout_keep_alive=KEEP_ALIVE_SECONDS, **options)


if __name__ == "__main__":
    main()
