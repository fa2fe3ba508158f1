"""Snapshots and forks: new sandboxes from a sandbox's files.

A local snapshot is a copy of the sandbox's own files (its upper layer, taken while the sandbox is
briefly frozen so the copy is one consistent moment) plus the names of the read-only template layers
under them. It never holds memory: a sandbox started from a snapshot, or forked, boots fresh on those
files, without the source's running processes, kernel state or open connections. That holds whatever
`mode` was asked for; E2B's default `full` snapshot also restores memory.

Naming follows E2B: every snapshot belongs to a snapshot template; an unnamed one is reported as
`<template-id>:default`, a named one as `local/<name>:<tag>` (tag `default` unless the name has one),
and taking a snapshot under an existing name and tag replaces that build. Any of these forms, with or
without the namespace or tag, works as `templateID` in create and in `delete_snapshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from e2b_local.control.errors import ApiError
from e2b_local.control.fleet.records import Source, SpawnOptions, builtin_template
from e2b_local.control.fleet.sandboxes import Fleet
from e2b_local.control.registry import Registry, SandboxRecord, SnapshotRecord
from e2b_local.control.services import events
from e2b_local.protocol import TEMPLATES

log = logging.getLogger("e2b_local")

DEFAULT_TAG = "default"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$", re.IGNORECASE)
# E2B's bounds for one fork request, and its API's default lifetime for a fork.
MAX_FORKS = 20
FORK_TIMEOUT = 15
STAGING_PREFIX = ".staging-"


def split_reference(reference: str) -> tuple[str, str | None]:
    """`namespace/name:tag` -> (name, tag); the namespace is ignored, the tag may be absent."""
    name, _, tag = reference.split("/")[-1].partition(":")
    return name, tag or None


class SnapshotStore:
    """Snapshot builds: files under `directory`, records in the registry."""

    def __init__(self, directory: Path, registry: Registry) -> None:
        self.directory = directory
        self.registry = registry

    def files(self, snapshot: SnapshotRecord) -> Path:
        return self.directory / snapshot.build_id / "upper"

    def clean_up(self) -> None:
        """Delete copies no record points to (left by a crash in the middle of a snapshot or fork)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        known = {s.build_id for s in self.registry.snapshots()}
        for entry in self.directory.iterdir():
            if entry.name not in known:
                shutil.rmtree(entry, ignore_errors=True)

    def staging(self) -> Path:
        """A fresh directory to copy sandbox files into before they become a build or a fork."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / (STAGING_PREFIX + secrets.token_hex(8))
        path.mkdir(mode=0o700)
        return path

    def matching(self, reference: str | None = None, sandbox_id: str | None = None) -> list[SnapshotRecord]:
        """Builds whose template id or name (and tag, when given) match, oldest first."""
        found = self.registry.snapshots()
        if reference:
            name, tag = split_reference(reference)
            found = [s for s in found if name in (s.template_id, s.name) and (tag is None or s.tag == tag)]
        if sandbox_id:
            found = [s for s in found if s.sandbox_id == sandbox_id]
        return sorted(found, key=lambda s: (s.created_at, s.build_id))

    def for_template(self, reference: str) -> SnapshotRecord | None:
        """The build `templateID` names: its tag, else `default`, else the newest build."""
        found = self.matching(reference)
        if split_reference(reference)[1] is None:
            found = [s for s in found if s.tag == DEFAULT_TAG] or found
        return found[-1] if found else None

    def add(self, source: SandboxRecord, staged: Path, name: str | None, tag: str) -> SnapshotRecord:
        """Turn staged files into a build of snapshot `name:tag` (or of a new unnamed template)."""
        template_id = "snap" + secrets.token_hex(8)
        replaced: list[SnapshotRecord] = []
        if name:
            same_name = [s for s in self.registry.snapshots() if s.name == name]
            if same_name:
                template_id = same_name[0].template_id
            replaced = [s for s in same_name if s.tag == tag]
        build_id = "b" + secrets.token_hex(10)
        (self.directory / build_id).mkdir(mode=0o700)
        staged.rename(self.directory / build_id / "upper")
        snapshot = SnapshotRecord(
            build_id=build_id, template_id=template_id, tag=tag, sandbox_id=source.sandbox_id,
            base_template=source.base_template or source.template_id, layers=list(source.layers),
            created_at=time.time(), name=name, env_vars=dict(source.env_vars),
            default_user=source.default_user, default_workdir=source.default_workdir,
        )
        self.registry.put_snapshot(snapshot)
        for old in replaced:
            self.remove(old)
        return snapshot

    def source(self, snapshot: SnapshotRecord) -> Source:
        """What a sandbox started from `snapshot` starts from."""
        layers = [Path(p) for p in snapshot.layers]
        if not all(p.is_dir() for p in layers):
            log.warning("snapshot %s: its template layers were rebuilt; using the current ones", snapshot.snapshot_id)
            layers = []
        return Source(template_id=snapshot.template_id, alias=snapshot.name, base_template=snapshot.base_template,
                      layers=layers or None, files=self.files(snapshot), env_vars=snapshot.env_vars,
                      default_user=snapshot.default_user, default_workdir=snapshot.default_workdir)

    def remove(self, snapshot: SnapshotRecord) -> None:
        self.registry.delete_snapshot(snapshot.build_id)
        shutil.rmtree(self.directory / snapshot.build_id, ignore_errors=True)


def parse_name(raw: str | None) -> tuple[str | None, str]:
    """Validate a snapshot name (optionally `namespace/` and `:tag`); (name or None, tag)."""
    if not raw:
        return None, DEFAULT_TAG
    name, tag = split_reference(raw)
    tag = tag or DEFAULT_TAG
    for part, what in ((name, "name"), (tag, "tag")):
        if not NAME.match(part):
            raise ApiError(400, f"invalid snapshot {what} '{part}': use letters, digits, '.', '_' and '-'")
    if name in TEMPLATES:
        raise ApiError(400, f"'{name}' is a built-in template name; choose another snapshot name")
    return name, tag


class Snapshots:
    """Snapshots of the fleet's sandboxes, forks, and sandboxes started from either."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.store = SnapshotStore(fleet.paths.snapshots, fleet.registry)
        # Asked by `resolve` after the built-in templates (custom templates): each maps a `templateID`
        # to a Source, or None when it is not theirs.
        self.resolvers: list[Callable[[str], Source | None]] = []

    async def clean_up(self) -> None:
        """Delete copies no record points to (left by a crash in the middle of a snapshot or fork)."""
        await asyncio.to_thread(self.store.clean_up)

    def resolve(self, template: str) -> Source:
        """What `templateID` names: a built-in template, a custom one (see `resolvers`), or a snapshot
        (by id or name, with optional tag)."""
        name = builtin_template(template)
        if name is not None:
            return Source(template_id=name, alias=name, base_template=name)
        for resolver in self.resolvers:
            source = resolver(template)
            if source is not None:
                return source
        snapshot = self.store.for_template(template)
        if snapshot is None:
            raise ApiError(404, f"template '{template}' not found")
        return self.store.source(snapshot)

    async def create(self, template: str, options: SpawnOptions) -> SandboxRecord:
        """Start a sandbox from the template or snapshot `template` names."""
        record = await self.fleet.spawn(self.resolve(template), options)
        log.info("sandbox %s created from %s", record.sandbox_id, template)
        return record

    async def _capture_files(self, record: SandboxRecord, destination: Path) -> None:
        """Copy a sandbox's files to `destination` as they are at one moment.

        A running sandbox is frozen for the copy and thawed after; a paused one is copied as it is.
        """
        container = self.fleet.live[record.sandbox_id].container
        target = destination / "upper"
        if not record.running:
            await asyncio.to_thread(container.copy_files, target)
            return
        await asyncio.to_thread(container.freeze)
        try:
            await asyncio.to_thread(container.copy_files, target)
        finally:
            await asyncio.to_thread(container.thaw)

    async def take(self, sandbox_id: str, raw_name: str | None) -> SnapshotRecord:
        """Snapshot a sandbox's files (memory is not kept; see the module docstring)."""
        name, tag = parse_name(raw_name)
        async with self.fleet.lock(sandbox_id):
            record = self.fleet.get(sandbox_id)
            staged = self.store.staging()
            try:
                await self._capture_files(record, staged)
                snapshot = self.store.add(record, staged / "upper", name, tag)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
            self.fleet.events.emit(events.CHECKPOINTED, record, {"snapshot_id": snapshot.snapshot_id})
            return snapshot

    def delete(self, reference: str) -> bool:
        """Delete the builds `reference` names (all tags of a template when no tag is given)."""
        found = self.store.matching(reference)
        for snapshot in found:
            self.store.remove(snapshot)
        return bool(found)

    async def fork(self, sandbox_id: str, count: int, timeout: int | None) -> list[SandboxRecord | Exception]:
        """Start `count` sandboxes on a copy of the parent's files, taken once; the parent is untouched.

        Forks do not get the parent's memory or processes: they boot fresh on its files. Each fork gets
        the parent's env vars, network settings and lifecycle, and fails or succeeds on its own.
        """
        if not 1 <= count <= MAX_FORKS:
            raise ApiError(400, f"count must be between 1 and {MAX_FORKS}")
        staged = self.store.staging()
        try:
            async with self.fleet.lock(sandbox_id):
                parent = self.fleet.get(sandbox_id)
                await self._capture_files(parent, staged)
            source = Source(template_id=parent.template_id, alias=parent.alias,
                            base_template=parent.base_template or parent.template_id,
                            layers=[Path(p) for p in parent.layers] or None, files=staged / "upper",
                            default_user=parent.default_user, default_workdir=parent.default_workdir)
            options = SpawnOptions(
                timeout=FORK_TIMEOUT if timeout is None else timeout, env_vars=dict(parent.env_vars),
                allow_internet_access=parent.allow_internet_access, network=parent.network,
                lifecycle=parent.lifecycle, auto_pause_memory=parent.auto_pause_memory)
            results: list[SandboxRecord | Exception] = []
            for _ in range(count):
                # One after another: each copy and boot is disk- and CPU-bound already.
                try:
                    results.append(await self.fleet.spawn(source, options))
                except Exception as exc:  # reported in that fork's entry; the others go on
                    results.append(exc)
            return results
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(staged)
