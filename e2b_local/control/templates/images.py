"""Bases pulled from container registries (`from_image`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from e2b_local.control.templates.builder import Base, StepFailed

if TYPE_CHECKING:
    from e2b_local.control.templates.records import BuildRecord
    from e2b_local.control.templates.service import TemplateService


def registry_of(image: str) -> str:
    """The registry host an image reference names (Docker Hub when it names none)."""
    first = image.split("/")[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


async def pull_base(service: TemplateService, build: BuildRecord, image: str,
                    credentials: dict[str, Any] | None) -> Base:
    """The layers of `image`, pulled from its registry."""
    raise StepFailed("base", f"cannot use image '{image}' from registry {registry_of(image)}: "
                             "this server builds from its own templates only (use from_template or from_base_image)")
