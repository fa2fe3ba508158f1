"""The agent's ASGI application: routes a request to envd's services or to the code interpreter.

The host forwards every sandbox request here once it has authenticated it (the agent holds no token
and checks none), so the `E2b-Sandbox-Port` header still says which in-sandbox service it was meant
for: 49999 is the code interpreter, anything else is envd. `/init` comes only from the control plane,
which the host's router never lets a client reach.

Everything per-sandbox (its settings, its users, the workload cgroup) is built once here, when the
agent starts, and handed to the services that need it.
"""

from __future__ import annotations

import socket

from e2b.envd.process.process_connect import ProcessASGIApplication
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from e2b_local.agent import files
from e2b_local.agent.connect import CODECS, EnvelopeCheck
from e2b_local.agent.filesystem import filesystem_app
from e2b_local.agent.journal import Journal
from e2b_local.agent.process import ProcessService
from e2b_local.agent.state import SandboxState
from e2b_local.agent.sudo import SudoBroker
from e2b_local.agent.users import Accounts
from e2b_local.agent.workload import Workload
from e2b_local.asgi import read_json_object
from e2b_local.interpreter.app import InterpreterApp
from e2b_local.protocol import CODE_INTERPRETER_PORT, JOURNAL_PATH

_INTERPRETER_PORT = str(CODE_INTERPRETER_PORT).encode()
# The /init fields copied into the sandbox's state when present and not empty.
_INIT_FIELDS = (("sandboxId", "sandbox_id"), ("templateId", "template_id"),
                ("defaultUser", "default_user"), ("defaultWorkdir", "default_workdir"))


class AgentApp:
    """Dispatches by sandbox port and RPC path; one instance per agent."""

    def __init__(self, state: SandboxState, workload: Workload, interpreter: InterpreterApp) -> None:
        """`interpreter`: the code interpreter, built before this module is imported (see `__main__.start`)."""
        self.state = state
        accounts = Accounts(self.state)
        self.journal = Journal()
        self.envd_http = Starlette(routes=[
            Route("/health", self.health, methods=["GET"]),
            Route("/init", self.init, methods=["POST"]),
            Route("/envs", self.envs, methods=["GET"]),
            Route(JOURNAL_PATH, self.journal.endpoint, methods=["GET"]),
            *files.routes(accounts),
        ])
        self.process_rpc = EnvelopeCheck(ProcessASGIApplication(
            ProcessService(self.state, accounts, workload, self.journal), codecs=CODECS))
        self.filesystem_rpc = EnvelopeCheck(filesystem_app(accounts))
        self.interpreter = interpreter
        self.sudo = SudoBroker(workload)

    async def health(self, request: Request) -> Response:
        """`GET /health`."""
        return Response(status_code=204)

    async def init(self, request: Request) -> Response:
        """Apply the sandbox's settings (E2B's orchestrator sends the same on boot and resume)."""
        body = await read_json_object(request.receive)
        if "envVars" in body:
            self.state.env_vars = dict(body["envVars"] or {})
        for key, attr in _INIT_FIELDS:
            if body.get(key):
                setattr(self.state, attr, body[key])
        if body.get("hostname"):
            socket.sethostname(body["hostname"])
        return Response(status_code=204)

    async def envs(self, request: Request) -> Response:
        """`GET /envs`: the sandbox's environment variables."""
        return JSONResponse(self.state.sandbox_env())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.envd_http(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path: str = scope.get("path", "")
        if headers.get(b"e2b-sandbox-port") == _INTERPRETER_PORT:
            await self.interpreter(scope, receive, send)
        elif path.startswith("/process.Process/"):
            await self.process_rpc(scope, receive, send)
        elif path.startswith("/filesystem.Filesystem/"):
            await self.filesystem_rpc(scope, receive, send)
        else:
            await self.envd_http(scope, receive, send)
