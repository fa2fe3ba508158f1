"""Run the agent: `python -m e2b_local.agent` inside a sandbox (the launcher starts it)."""

from __future__ import annotations

import asyncio
import os

import uvicorn

from e2b_local.agent.app import AgentApp

DEFAULT_SOCKET = "/.e2b/run/agent.sock"


def main() -> None:
    path = os.environ.get("E2B_LOCAL_AGENT_SOCKET", DEFAULT_SOCKET)
    if os.path.exists(path):
        os.unlink(path)
    config = uvicorn.Config(
        AgentApp(), uds=path, log_level="warning", access_log=False, lifespan="off",
        # The host keeps connections to the agent open between requests.
        timeout_keep_alive=600, h11_max_incomplete_event_size=None,
    )
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
