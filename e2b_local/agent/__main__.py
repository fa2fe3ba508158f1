"""Run the agent: `python -m e2b_local.agent` inside a sandbox (the launcher starts it)."""

from __future__ import annotations

import asyncio
import os

import uvicorn

from e2b_local.agent.app import AgentApp, owned_pids
from e2b_local.agent.reaper import reap_forever

# The launcher binds the agent's socket outside the sandbox and hands it over as this descriptor.
AGENT_FD_VARIABLE = "E2B_LOCAL_AGENT_FD"


def main() -> None:
    fd = int(os.environ.pop(AGENT_FD_VARIABLE))
    # Nothing the agent starts may inherit it.
    os.set_inheritable(fd, False)
    config = uvicorn.Config(
        AgentApp(), fd=fd, log_level="warning", access_log=False, lifespan="off",
        # The host keeps connections to the agent open between requests.
        timeout_keep_alive=600, h11_max_incomplete_event_size=None,
    )
    asyncio.run(serve(uvicorn.Server(config)))


async def serve(server: uvicorn.Server) -> None:
    """Serve requests, and reap orphaned processes as the sandbox's pid 1 must."""
    reaper = asyncio.create_task(reap_forever(owned_pids))
    if isinstance(server.config.app, AgentApp):
        server.config.app.prestart()
    try:
        await server.serve()
    finally:
        reaper.cancel()


if __name__ == "__main__":
    main()
