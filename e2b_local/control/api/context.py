"""The services a route acts on, as the application holds them."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from e2b_local.control.fleet.sandboxes import Fleet
from e2b_local.control.lifecycle import SandboxLifecycle
from e2b_local.control.secrets import Secrets
from e2b_local.control.snapshots import Snapshots
from e2b_local.control.templates import TemplateService
from e2b_local.control.volumes import Volumes


@dataclass(frozen=True)
class Services:
    """The fleet and what builds on it."""

    fleet: Fleet
    lifecycle: SandboxLifecycle
    snapshots: Snapshots
    templates: TemplateService
    volumes: Volumes
    secrets: Secrets


def services(request: Request) -> Services:
    return request.app.state.services
