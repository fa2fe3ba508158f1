"""Run the agent: `python -m e2b_local.agent` inside a sandbox (the launcher starts it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator

import uvicorn

from e2b_local.agent.app import AgentApp
from e2b_local.agent.reaper import install_reaper, release_reaper
from e2b_local.agent.state import SandboxState
from e2b_local.agent.workload import Workload
from e2b_local.protocol import AGENT_FD_VARIABLE

# Idle connections from the host are kept this long (the host lets them go sooner: upstream.py).
KEEP_ALIVE_SECONDS = 600


class AgentServer(uvicorn.Server):
    """uvicorn without its signal handlers: the agent must handle no signal at all (see `main`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
    config = uvicorn.Config(
        AgentApp(SandboxState(), workload), fd=fd, log_level="warning", access_log=False, lifespan="off",
        # The host keeps connections to the agent open between requests.
        timeout_keep_alive=KEEP_ALIVE_SECONDS, h11_max_incomplete_event_size=None,
    )
    asyncio.run(serve(AgentServer(config)))


async def serve(server: uvicorn.Server) -> None:
    """Serve requests, waiting for every child (orphans too) as the sandbox's pid 1 must."""
    reaper = install_reaper(asyncio.get_running_loop())
    if isinstance(server.config.app, AgentApp):
        server.config.app.prestart()
    try:
        await server.serve()
    finally:
        release_reaper(reaper)


if __name__ == "__main__":
    main()
