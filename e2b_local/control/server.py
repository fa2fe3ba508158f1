"""The e2b-local server: one port, routed per request to the control plane or to a sandbox.

It builds the layers bottom up (the fleet, then the lifecycle and snapshots on it, then the API and
the router on those) and starts and stops them in that order.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from e2b_local.control.api import app, volumes
from e2b_local.control.api.context import Services
from e2b_local.control.egress.proxy import EgressProxy, Route, rule_headers
from e2b_local.control.errors import error_response
from e2b_local.control.fleet.sandboxes import Fleet
from e2b_local.control.lifecycle import SandboxLifecycle
from e2b_local.control.router import Router
from e2b_local.control.secrets import Secrets
from e2b_local.control.snapshots import Snapshots
from e2b_local.control.volumes import Volumes
from e2b_local.isolation.container import become_subreaper
from e2b_local.settings import Settings

log = logging.getLogger("e2b_local")
# Control-plane paths that answer without the API key (the CLI's readiness probe).
OPEN_PATHS = ("/health",)


class Server:
    """The ASGI application of e2b-local."""

    def __init__(self, settings: Settings, api_key: str) -> None:
        self.api_key = api_key
        paths = settings.paths
        paths.secure()
        self.fleet = Fleet(settings)
        self.lifecycle = SandboxLifecycle(self.fleet)
        self.snapshots = Snapshots(self.fleet)
        self.volumes = Volumes(self.fleet, paths.volumes, settings.volume_mb)
        self.secrets = Secrets(self.fleet.registry, paths.secret_key_file)
        self.egress = EgressProxy(self._egress_route, self.secrets.fill)
        self.router = Router(self.fleet, self.lifecycle, api_key)
        self.api = app.build(Services(self.fleet, self.lifecycle, self.snapshots, self.volumes, self.secrets),
                             paths.home, self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        become_subreaper()
        await self.volumes.start()  # before the fleet: a sandbox booted again needs its volumes
        await self.egress.start()  # before the fleet: sandboxes' steering names its port
        self.fleet.egress_port = self.egress.port
        await self.fleet.start()
        await self.snapshots.clean_up()
        self.lifecycle.start()
        self.fleet.run_background()
        try:
            yield
        finally:
            self.lifecycle.stop()
            await self.fleet.stop()
            await self.egress.stop()

    def _egress_route(self, owner: int) -> Route | None:
        record = self.fleet.by_owner(owner)
        if record is None or not record.network:
            return None
        return Route(owner=owner, rules=rule_headers(record.network), socks=record.network.get("egressProxy"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        headers = dict(scope["headers"])
        sandbox_id = headers.get(b"e2b-sandbox-id")
        if sandbox_id is not None:
            await self.router.forward(sandbox_id.decode("latin-1"), scope, receive, send)
            return
        # The content API checks each volume's own token instead.
        if scope["path"] not in OPEN_PATHS and not scope["path"].startswith(volumes.CONTENT_PREFIX):
            key = headers.get(b"x-api-key", b"").decode("latin-1")
            if not secrets.compare_digest(key, self.api_key):
                await error_response(401, "Invalid API key", final=False)(scope, receive, send)
                return
        await self.api(scope, receive, send)
