"""Custom templates built on this server with the SDK's Template builder.

`routes()` is the template API (mounted with the control plane's routes), `TemplateService` the
records, build queue and layer store behind it; the service registers itself with the sandbox
manager so that `Sandbox.create("<name>[:tag]")` boots from a template's layers.
"""

from __future__ import annotations

from e2b_local.control.templates.api import UPLOAD_PREFIX, routes
from e2b_local.control.templates.service import TemplateService

# Paths that answer without the API key: upload links, checked by their signature instead.
OPEN_PREFIXES = (UPLOAD_PREFIX,)

__all__ = ["OPEN_PREFIXES", "TemplateService", "routes"]
