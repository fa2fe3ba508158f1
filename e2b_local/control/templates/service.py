"""Custom templates: records, build logs, uploads, layers, and sandboxes started from a template."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import string
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import httpx

import e2b_local.control.templates.images as images
from e2b_local.control.errors import ApiError
from e2b_local.control.fleet.records import Source
from e2b_local.control.fleet.sandboxes import Fleet
from e2b_local.control.templates.builder import (
    DEFAULT_USER,
    DEFAULT_WORKDIR,
    Base,
    Builder,
    StepFailed,
    builtin_image,
)
from e2b_local.control.templates.layers import LayerStore
from e2b_local.control.templates.records import (
    BUILDING,
    DEFAULT_TAG,
    ERROR,
    READY,
    WAITING,
    BuildRecord,
    TemplateRecord,
    TemplateRegistry,
)
from e2b_local.protocol import TEMPLATES
from e2b_local.settings import Settings

log = logging.getLogger("e2b_local")

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
TAG = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$")
ID_ALPHABET = string.ascii_lowercase + string.digits
# E2B's defaults for a template build that names no resources.
DEFAULT_CPU = 2
DEFAULT_MEMORY_MB = 1024
KEY_BYTES = 32
# Entries kept per build (a build that prints more keeps its first ones and its errors), and the
# builds whose entries are kept in memory besides their files.
MAX_LOG_ENTRIES = 10_000
CACHED_LOGS = 16


def load_or_create_key(path: Path) -> bytes:
    """The 32-byte key kept in `path`, created (mode 0600) on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        try:
            key = bytes.fromhex(path.read_text().strip())
        except ValueError:
            key = b""
        if len(key) == KEY_BYTES:
            return key
        # Unreadable as a key (a crash while it was written): links signed with it cannot be checked either.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def split_name(reference: str) -> tuple[str, str | None]:
    """`namespace/name:tag` -> (name, tag or None); the namespace is ignored."""
    name, _, tag = reference.split("/")[-1].partition(":")
    return name, tag or None


class TemplateService:
    """Everything about custom templates, on top of the fleet (which boots their sandboxes).

    `source_for` is what a create naming a custom template starts from: register it with the
    snapshots' resolvers.
    """

    def __init__(self, fleet: Fleet, settings: Settings) -> None:
        self.fleet = fleet
        self.settings = settings
        home = fleet.paths.home
        self.directory = home / "templates"
        self.registry = TemplateRegistry(fleet.paths.registry)
        self.store = LayerStore(self.directory)
        self.uploads = self.directory / "files"
        self.log_dir = self.directory / "logs"
        for d in (self.uploads, self.log_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The entries of the builds read or written last (the rest are read from their files again).
        self.logs: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        # Signs upload links: the SDK uploads without its API key, as it would to a presigned URL.
        self.upload_secret = load_or_create_key(fleet.paths.upload_key_file)
        self.builder = Builder(self, settings.build_concurrency, settings.ready_timeout)
        self._recover()

    def _recover(self) -> None:
        """Builds the server was running when it stopped failed: none of them is usable."""
        for build in self.registry.builds():
            if build.status in (WAITING, BUILDING):
                self.fail(build, "the build was interrupted: the server restarted before it finished", None, [])
        self.collect(leftovers=True)

    # -- records -----------------------------------------------------------------------------------
    def find(self, reference: str) -> TemplateRecord | None:
        """The template `reference` names: its id, or its name (with an optional namespace and tag)."""
        name, _ = split_name(reference)
        for template in self.registry.templates():
            if name in (template.template_id, template.name):
                return template
        return None

    def get(self, reference: str) -> TemplateRecord:
        template = self.find(reference)
        if template is None:
            raise ApiError(404, f"template '{reference}' not found")
        return template

    def build(self, template_id: str, build_id: str) -> BuildRecord:
        for build in self.registry.builds(template_id):
            if build.build_id == build_id:
                return build
        template = self.find(template_id)
        if template is not None and template.template_id != template_id:
            return self.build(template.template_id, build_id)
        raise ApiError(404, f"build '{build_id}' of template '{template_id}' not found")

    def tagged_build(self, reference: str) -> tuple[TemplateRecord, BuildRecord] | None:
        """The ready build `name[:tag]` names (tag `default` when absent)."""
        template = self.find(reference)
        if template is None:
            return None
        tag = template.tag(split_name(reference)[1] or DEFAULT_TAG)
        if tag is None:
            return None
        builds = {b.build_id: b for b in self.registry.builds(template.template_id)}
        build = builds.get(tag.build_id)
        return (template, build) if build is not None and build.status == READY else None

    def request(self, name_arg: str, tags: list[str], cpu_count: int | None, memory_mb: int | None
                ) -> tuple[TemplateRecord, BuildRecord]:
        """A new build of template `name_arg` (created when new), waiting for its steps."""
        name, tag = split_name(name_arg)
        if not NAME.match(name):
            raise ApiError(400, f"invalid template name '{name}': use lowercase letters, digits, '.', '_' and '-'")
        if name in TEMPLATES:
            raise ApiError(409, f"'{name}' is a built-in template; choose another name")
        all_tags = list(dict.fromkeys([*([tag] if tag else []), *tags])) or [DEFAULT_TAG]
        for t in all_tags:
            if not TAG.match(t):
                raise ApiError(400, f"invalid tag '{t}': use letters, digits, '.', '_' and '-'")
        now = time.time()
        template = self.find(name)
        if template is None:
            template = TemplateRecord(template_id="".join(secrets.choice(ID_ALPHABET) for _ in range(20)),
                                      name=name, created_at=now, updated_at=now,
                                      cpu_count=cpu_count or DEFAULT_CPU, memory_mb=memory_mb or DEFAULT_MEMORY_MB)
        if cpu_count is not None:
            template.cpu_count = cpu_count
        if memory_mb is not None:
            template.memory_mb = memory_mb
        template.build_count += 1
        template.updated_at = now
        build = BuildRecord(build_id=str(uuid.uuid4()), template_id=template.template_id, status=WAITING,
                            created_at=now, updated_at=now, cpu_count=template.cpu_count,
                            memory_mb=template.memory_mb, tags=all_tags)
        self.registry.put_template(template)
        self.registry.put_build(build)
        return template, build

    def start(self, build: BuildRecord, recipe: dict[str, Any]) -> None:
        if build.recipe:
            raise ApiError(400, f"build '{build.build_id}' was started already")
        self.update_build(build, recipe=recipe)
        self.builder.submit(build)

    def update_build(self, build: BuildRecord, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(build, name, value)
        build.updated_at = time.time()
        self.registry.put_build(build)

    def fail(self, build: BuildRecord, message: str, step: str | None, tail: list[str]) -> None:
        now = time.time()
        entries = [self._entry("error", line, step, now) for line in tail]
        reason: dict[str, Any] = {"message": message, "logEntries": entries}
        if step is not None:
            reason["step"] = step
        self.update_build(build, status=ERROR, reason=reason, finished_at=now)

    def finish(self, build: BuildRecord) -> None:
        """Mark the build ready and point its tags at it."""
        now = time.time()
        self.log(build, "info", "Build finished", step="finalize")
        self.update_build(build, status=READY, finished_at=now)
        template = self.get(build.template_id)
        for tag in build.tags:
            template.set_tag(tag, build.build_id, now)
        template.updated_at = now
        self.registry.put_template(template)
        # Its sandboxes start on the new build from now on: none waits on the old one.
        self.fleet.pool.forget(template.template_id)

    async def delete(self, reference: str) -> None:
        """Delete the template, its builds and their logs, then the layers no other template uses."""
        template = self.get(reference)
        await asyncio.to_thread(self._delete_records, template)
        # Before its layers go: a pre-started sandbox of the template runs on them.
        await self.fleet.pool.drop(template.template_id)
        await asyncio.to_thread(self.collect)

    def _delete_records(self, template: TemplateRecord) -> None:
        builds = self.registry.builds(template.template_id)
        self.registry.delete_template(template.template_id)
        for build in builds:
            self.logs.pop(build.build_id, None)
            self._log_file(build.build_id).unlink(missing_ok=True)

    def collect(self, leftovers: bool = False) -> None:
        """Free the layers and uploads no remaining build uses."""
        in_use = {layer for b in self.registry.builds() for layer in b.layers}
        self.store.collect(in_use, leftovers=leftovers)

    # -- logs --------------------------------------------------------------------------------------
    @staticmethod
    def _entry(level: str, message: str, step: str | None, at: float) -> dict[str, Any]:
        # `at` is seconds since the epoch; the API writes it as E2B's timestamp.
        entry: dict[str, Any] = {"at": at, "level": level, "message": message}
        if step is not None:
            entry["step"] = step
        return entry

    def _log_file(self, build_id: str) -> Path:
        return self.log_dir / f"{build_id}.jsonl"

    def log(self, build: BuildRecord, level: str, message: str, step: str | None = None) -> None:
        """Add an entry to the build's log, kept in its file.

        Past MAX_LOG_ENTRIES entries a build's output is no longer kept (one warning says so); its
        errors still are, so that a failure's own lines are always there.
        """
        entries = self.entries(build.build_id)
        if len(entries) >= MAX_LOG_ENTRIES and level != "error":
            if entries[-1].get("truncated"):
                return
            message, level = f"Build output past {MAX_LOG_ENTRIES} lines is not kept", "warn"
            entry = {**self._entry(level, message, step, time.time()), "truncated": True}
        else:
            entry = self._entry(level, message, step, time.time())
        entries.append(entry)
        with open(self._log_file(build.build_id), "a") as f:
            f.write(json.dumps(entry) + "\n")

    def entries(self, build_id: str) -> list[dict[str, Any]]:
        """The build's log entries, oldest first."""
        if build_id in self.logs:
            self.logs.move_to_end(build_id)
            return self.logs[build_id]
        path = self._log_file(build_id)
        lines = path.read_text().splitlines() if path.exists() else []
        self.logs[build_id] = entries = [json.loads(line) for line in lines if line]
        while len(self.logs) > CACHED_LOGS:
            self.logs.popitem(last=False)
        return entries

    # -- uploads -----------------------------------------------------------------------------------
    def upload_path(self, files_hash: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", files_hash):
            raise ApiError(400, f"invalid files hash '{files_hash}'")
        return self.uploads / files_hash

    def upload_signature(self, template_id: str, files_hash: str) -> str:
        return hmac.new(self.upload_secret, f"{template_id}/{files_hash}".encode(), hashlib.sha256).hexdigest()

    # -- bases and layers --------------------------------------------------------------------------
    def layer_paths(self, base_template: str, layers: list[str]) -> list[Path]:
        """The lower directories of a sandbox on `layers` (topmost first) over a built-in template."""
        return [self.store.files(i) for i in layers] + self.fleet.rootfs.layers(base_template)

    async def resolve_base(self, build: BuildRecord) -> Base:
        recipe = build.recipe
        parent = recipe.get("fromTemplate")
        image = recipe.get("fromImage")
        if parent:
            builtin = parent.split("/")[-1].split(":")[0]
            if builtin in TEMPLATES:
                return await self._builtin_base(builtin)
            found = self.tagged_build(parent)
            if found is None:
                raise StepFailed("base", f"base template '{parent}' not found (or it has no ready build)")
            _, base = found
            return Base(key=base.cache_key, layers=list(base.layers), base_template=base.base_template,
                        env=dict(base.env), user=base.user, workdir=base.workdir)
        if image:
            builtin = builtin_image(image)
            if builtin is not None:
                return await self._builtin_base(builtin)
            return await images.pull_base(self, self.builder, self.directory, build, image,
                                          recipe.get("fromImageRegistry"), self.settings.pull_timeout)
        return await self._builtin_base("base")

    async def _builtin_base(self, name: str) -> Base:
        paths = await asyncio.to_thread(self.fleet.rootfs.layers, name)
        return Base(key="builtin:" + ":".join(p.name for p in paths), layers=[], base_template=name)

    def source_for(self, reference: str) -> Source | None:
        """What a sandbox of template `reference` starts from (None: not a custom template)."""
        found = self.tagged_build(reference)
        if found is None:
            if self.find(reference) is not None:
                raise ApiError(404, f"template '{reference}' has no ready build with that tag")
            return None
        template, build = found
        template.spawn_count += 1
        template.last_spawned_at = time.time()
        self.registry.put_template(template)
        after_boot = None
        if build.start_cmd or build.ready_cmd:
            async def after_boot(client: httpx.AsyncClient) -> None:
                try:
                    await self.builder.check_ready(client, None, build.start_cmd, build.ready_cmd, build.user,
                                                   build.env, build.workdir, "ready")
                except StepFailed as exc:
                    raise ApiError(500, f"template '{template.name}': {exc.message}") from None
        return Source(template_id=template.template_id, alias=template.name, base_template=build.base_template,
                      # As on E2B, set_envs is for the build (and the start command): sandboxes do not inherit it.
                      layers=self.layer_paths(build.base_template, build.layers),
                      limits=dataclasses.replace(self.fleet.limits, memory_mb=build.memory_mb,
                                                 cpu_count=build.cpu_count),
                      after_boot=after_boot,
                      # E2B: the template's last user and working directory are its sandboxes' defaults.
                      default_user=build.user, default_workdir=build.workdir,
                      pool_owner=template.template_id)


__all__ = ["DEFAULT_USER", "DEFAULT_WORKDIR", "TemplateService"]
