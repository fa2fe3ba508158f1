"""Volumes: persistent directories that outlive sandboxes and are mounted into those that name them.

Each volume is an ext4 image of its own on a loop device (as a sandbox's disk is), mounted on the
host under the data directory: its size is a hard limit (ENOSPC past it, inside a sandbox and
through the content API alike), and sandboxes that mount it at once share one filesystem. Files are
stored owned by the storage range (sandbox uid + HOST_ID_BASE) and shown to each sandbox in its
server's range, as the root filesystems are. The mount survives a restart of the server; after a
reboot of the machine `start` mounts the images again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import re
import secrets
import shutil
import time
from pathlib import Path

from e2b_local.control.errors import ApiError
from e2b_local.control.fleet.records import new_id
from e2b_local.control.fleet.sandboxes import Fleet
from e2b_local.control.registry import VolumeRecord
from e2b_local.control.volumes.content import DEFAULT_DIR_MODE, DEFAULT_GID, DEFAULT_UID, VolumeFiles
from e2b_local.isolation.disk import SandboxDisk
from e2b_local.isolation.rootfs import HOST_ID_BASE
from e2b_local.protocol import AGENT_MOUNT, BASE_MOUNT, RUN_MOUNT

# E2B's volume names: letters, digits, '-' and '_'.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
# Where a volume may not be mounted: the agent's own mounts, and what the kernel or bubblewrap provides.
RESERVED_MOUNTS = ("/.e2b", "/proc", "/dev", "/sys", BASE_MOUNT, AGENT_MOUNT, RUN_MOUNT)
# The volume's files, in a directory of the filesystem's root (which also holds lost+found).
DATA_DIRECTORY = "data"


def volume_not_found(volume_id: str) -> ApiError:
    return ApiError(404, f"volume '{volume_id}' not found")


def check_mount_path(path: object) -> str:
    """A volume mount's path in the sandbox, validated: absolute, normalized, not over the system's own mounts."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ApiError(400, "a volume mount's 'path' must be an absolute path")
    normal = posixpath.normpath(path)
    if normal != path.rstrip("/") or "\0" in path or normal == "/":
        raise ApiError(400, f"invalid volume mount path '{path}'")
    if any(normal == r or normal.startswith(r + "/") for r in RESERVED_MOUNTS):
        raise ApiError(400, f"a volume cannot be mounted at '{path}'")
    return normal


class Volumes:
    """The volumes of this server, in the registry and on disk."""

    def __init__(self, fleet: Fleet, directory: Path, size_mb: int) -> None:
        self.fleet = fleet
        self.directory = directory
        self.size_mb = size_mb
        self.templates = directory.parent / "disk-templates"
        self._lock = asyncio.Lock()

    def _disk(self, volume_id: str) -> SandboxDisk:
        return SandboxDisk(self.directory / volume_id / "disk.img", self.directory / volume_id / "disk")

    def data(self, volume_id: str) -> Path:
        """The host directory that holds the volume's files (what sandboxes mount)."""
        return self._disk(volume_id).mountpoint / DATA_DIRECTORY

    def files(self, record: VolumeRecord) -> VolumeFiles:
        return VolumeFiles(str(self.data(record.volume_id)), HOST_ID_BASE)

    async def start(self) -> None:
        """Mount every volume's image that is not mounted (the machine restarted since)."""
        for record in self.fleet.registry.volumes():
            disk = self._disk(record.volume_id)
            if disk.image.exists():
                await asyncio.to_thread(disk.ensure_mounted)

    def list(self) -> list[VolumeRecord]:
        return sorted(self.fleet.registry.volumes(), key=lambda r: (r.created_at, r.volume_id))

    def get(self, volume_id: str) -> VolumeRecord:
        """The volume `volume_id` (404 when there is none)."""
        for record in self.fleet.registry.volumes():
            if record.volume_id == volume_id:
                return record
        raise volume_not_found(volume_id)

    def by_name(self, name: str) -> VolumeRecord | None:
        return next((r for r in self.fleet.registry.volumes() if r.name == name), None)

    async def create(self, name: object) -> VolumeRecord:
        """Create an empty volume called `name` (unique on this server)."""
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ApiError(400, "volume name must be 1-63 letters, digits, '-' or '_'")
        async with self._lock:
            if self.by_name(name) is not None:
                raise ApiError(409, f"volume with name '{name}' already exists")
            record = VolumeRecord(volume_id=new_id(), name=name, token=secrets.token_urlsafe(32),
                                  size_mb=self.size_mb, created_at=time.time())
            await asyncio.to_thread(self._make, record)
            try:
                self.fleet.registry.put_volume(record)
            except BaseException:
                await asyncio.to_thread(self._remove, record.volume_id)
                raise
        return record

    def _make(self, record: VolumeRecord) -> None:
        home = self.directory / record.volume_id
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.mkdir(mode=0o700)
        try:
            disk = self._disk(record.volume_id)
            disk.create(self.templates, record.size_mb)
            data = self.data(record.volume_id)
            data.mkdir(mode=DEFAULT_DIR_MODE)
            # The volume's root belongs to the sandbox's `user`, so both it and root may write there.
            os.chown(data, HOST_ID_BASE + DEFAULT_UID, HOST_ID_BASE + DEFAULT_GID)
        except BaseException:
            self._remove(record.volume_id)
            raise

    def _remove(self, volume_id: str) -> None:
        self._disk(volume_id).release(discard_data=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.directory / volume_id)

    def users(self, record: VolumeRecord) -> list[str]:
        """The sandboxes (running or paused) that mount the volume."""
        return sorted(r.sandbox_id for r in self.fleet.list()
                      if any(m.get("name") == record.name for m in r.volume_mounts))

    async def destroy(self, volume_id: str) -> None:
        """Delete the volume and its files; refused (409) while a sandbox mounts it."""
        async with self._lock:
            record = self.get(volume_id)
            users = self.users(record)
            if users:
                raise ApiError(409, f"volume '{volume_id}' is mounted by sandbox(es) {', '.join(users)}; "
                                    "kill them before deleting the volume")
            self.fleet.registry.delete_volume(volume_id)
            await asyncio.to_thread(self._remove, volume_id)

    def mounts(self, requested: object) -> tuple[dict[str, str], ...]:
        """Create's `volumeMounts`, validated, with each volume's host directory as `source`."""
        if requested is None:
            return ()
        if not isinstance(requested, list):
            raise ApiError(400, "'volumeMounts' must be a list of {name, path}")
        mounts: list[dict[str, str]] = []
        for item in requested:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ApiError(400, "each volume mount must be an object with 'name' and 'path'")
            path = check_mount_path(item.get("path"))
            if any(m["path"] == path for m in mounts):
                raise ApiError(400, f"two volumes are mounted at '{path}'")
            record = self.by_name(item["name"])
            if record is None:
                raise ApiError(400, f"volume '{item['name']}' not found")
            data = self.data(record.volume_id)
            if not data.is_dir():
                raise ApiError(500, f"volume '{record.name}' is not available on this machine")
            mounts.append({"name": record.name, "path": path, "source": str(data)})
        return tuple(mounts)
