"""The e2b-local server: one port, routed per request to the control plane or to a sandbox.

It builds the layers bottom up (the fleet, then the lifecycle and snapshots on it, then the API and
the router on those) and starts and stops them in that order.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from e2b_local.control import dashboard
from e2b_local.control.api import app, templates, volumes
from e2b_local.control.api.context import Services
from e2b_local.control.domain import ca, hosts, signed
from e2b_local.control.domain.listener import HttpsListener
from e2b_local.control.domain.ports import HostRouter
from e2b_local.control.domain.relay import Http1Relay
from e2b_local.control.egress.proxy import EgressProxy, Route, rule_headers
from e2b_local.control.egress.tls import EgressAuthority
from e2b_local.control.errors import error_response
from e2b_local.control.fleet.sandboxes import Fleet
from e2b_local.control.lifecycle import SandboxLifecycle
from e2b_local.control.router import Router
from e2b_local.control.secrets import Secrets
from e2b_local.control.services.webhooks import Deliveries
from e2b_local.control.snapshots import Snapshots
from e2b_local.control.templates import TemplateService
from e2b_local.control.volumes import Volumes
from e2b_local.isolation.reaping import become_subreaper
from e2b_local.protocol import ENVD_PORT
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
        self.templates = TemplateService(self.fleet, settings)
        self.snapshots.resolvers.append(self.templates.source_for)
        self.secrets = Secrets(self.fleet.registry, paths.secret_key_file)
        authority = EgressAuthority(paths.egress_ca)
        self.egress = EgressProxy(self._egress_route, self.secrets.fill, authority)
        # Every sandbox trusts it, so that the proxy can terminate TLS to hosts with header transforms.
        self.fleet.booter.trusted_ca = authority.pem
        self.router = Router(self.fleet, self.lifecycle, api_key)
        self.deliveries = Deliveries(self.fleet.events)
        self.api = app.build(Services(self.fleet, self.lifecycle, self.snapshots, self.templates, self.volumes,
                                      self.secrets), paths.home, self._lifespan)
        # Domain mode: sandbox ports by host name, and the HTTPS listener that serves them with the API.
        self.domain = settings.domain
        self.hosts = HostRouter(self.fleet, self.lifecycle, self.router)
        self.https = (HttpsListener(self, ca.ensure(paths.tls, settings.domain), settings.https_port,
                                    Http1Relay(self.hosts, settings.domain))
                      if settings.https_port else None)
        self.dashboard = dashboard.build(self, api_key, paths.log_file)

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
        if self.https is not None:
            try:
                await self.https.start()
            except OSError as exc:
                # Another server holds the port (a second data directory, say): serve on the plain port.
                log.error("domain mode is off: cannot listen on HTTPS port %d: %s", self.https.port, exc)
                self.https = None
                self.fleet.domain = None
        self.deliveries.start()
        # What exists now (modules, the services) lives as long as the server: the collector's full
        # passes, which stop every request while they run, need not walk it. With hundreds of
        # sandboxes they took up to 70 ms each, and showed as the slowest run_code calls.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await self.deliveries.stop()
            if self.https is not None:
                await self.https.stop()
            self.lifecycle.stop()
            await self.fleet.stop()
            await self.egress.stop()

    def _egress_route(self, owner: int) -> Route | None:
        record = self.fleet.by_owner(owner)
        if record is None or not record.network:
            return None
        return Route(owner=owner, rules=rule_headers(record.network), socks=record.network.get("egressProxy"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.api(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if (target := hosts.parse(headers.get(b"host"), self.domain)) is not None:
            await self.hosts(target, scope, receive, send)
            return
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        sandbox_id = headers.get(b"e2b-sandbox-id")
        if sandbox_id is None and scope["path"] == "/files" and b"signature=" in scope["query_string"]:
            found = signed.signed_by(list(self.fleet.records.values()), scope["method"], scope["query_string"])
            if found is not None:
                sandbox_id = found.encode()
                scope = {**scope, "headers": [*scope["headers"], (b"e2b-sandbox-id", sandbox_id),
                                              (b"e2b-sandbox-port", str(ENVD_PORT).encode())]}
        if sandbox_id is not None:
            await self.router.forward(sandbox_id.decode("latin-1"), scope, receive, send)
            return
        if dashboard.is_dashboard_path(scope["path"]):  # it checks its own login
            await self.dashboard(scope, receive, send)
            return
        # The content API checks each volume's own token instead; upload links carry a signature instead
        # of the key, as presigned URLs do.
        if (scope["path"] not in OPEN_PATHS and not scope["path"].startswith(volumes.CONTENT_PREFIX)
                and not scope["path"].startswith(templates.UPLOAD_PREFIX)):
            key = headers.get(b"x-api-key", b"").decode("latin-1")
            if not secrets.compare_digest(key, self.api_key):
                await error_response(401, "Invalid API key", final=False)(scope, receive, send)
                return
        await self.api(scope, receive, send)
