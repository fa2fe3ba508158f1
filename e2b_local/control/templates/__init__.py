"""Custom templates built on this server with the SDK's Template builder.

`TemplateService` holds the records, build queue and layer store; its routes are
`control/api/templates.py`. `TemplateService.source_for` is registered with the snapshots'
resolvers, so that `Sandbox.create("<name>[:tag]")` boots from a template's layers.
"""

from __future__ import annotations

from e2b_local.control.templates.service import TemplateService

__all__ = ["TemplateService"]
