"""The layer store: each build step's result, found again by a key like Docker's build cache.

A step's cache key is a digest of the step and of the key before it, so a key names a whole prefix
of a recipe: an unchanged prefix finds its layers again, and templates that share a prefix share
its layers. The index maps a key to the layer last built for it; layers themselves have ids of their
own, so a forced rebuild makes a new layer (and points the key at it) without touching the old one,
which sandboxes of other templates may still be running on.

A layer's `fs/` is the upper directory its step left (overlay whiteouts and opaque directories
included), owned by the storage range (sandbox uid + HOST_ID_BASE) whatever range the server that
built it used. Steps that change no files (ENV, USER) have a key but no layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from e2b_local.isolation.rootfs import HOST_ID_BASE, ID_RANGE

STAGING_PREFIX = ".staging-"


def cache_key(parent: str, step: dict[str, Any]) -> str:
    """The cache key of `step` run on top of the prefix keyed `parent`."""
    text = json.dumps({"parent": parent, "step": step}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def shift_range(root: Path, source_base: int, target_base: int) -> None:
    """Move every file's owner from one id range to another, keeping setuid/setgid bits."""
    if source_base == target_base:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, None]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            st = os.lstat(path)
            uid, gid = st.st_uid, st.st_gid
            if source_base <= uid < source_base + ID_RANGE:
                uid = uid - source_base + target_base
            if source_base <= gid < source_base + ID_RANGE:
                gid = gid - source_base + target_base
            if (uid, gid) == (st.st_uid, st.st_gid):
                continue
            os.lchown(path, uid, gid)
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))


class LayerStore:
    """Layers under `layers/<id>/fs`, the cache index under `index/<key>` (a layer id, or "" for none)."""

    def __init__(self, directory: Path) -> None:
        self.layers = directory / "layers"
        self.index = directory / "index"
        for d in (directory, self.layers, self.index):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    def files(self, layer_id: str) -> Path:
        return self.layers / layer_id / "fs"

    def lookup(self, key: str) -> str | None:
        """The layer id cached for `key` ("" for a step that changed nothing), or None on a miss."""
        try:
            layer_id = (self.index / key).read_text()
        except FileNotFoundError:
            return None
        if layer_id and not self.files(layer_id).is_dir():
            return None
        return layer_id

    def remember(self, key: str, layer_id: str) -> None:
        tmp = self.index / (STAGING_PREFIX + secrets.token_hex(8))
        tmp.write_text(layer_id)
        os.replace(tmp, self.index / key)

    def staging(self) -> Path:
        """A fresh directory on the store's filesystem for a layer being made."""
        path = self.layers / (STAGING_PREFIX + secrets.token_hex(8))
        path.mkdir(mode=0o700)
        return path

    def commit(self, staged_fs: Path, id_base: int, meta: dict[str, Any]) -> str:
        """Turn `staged_fs` (a copied upper directory owned by `id_base`'s range) into a layer; its id."""
        shift_range(staged_fs, id_base, HOST_ID_BASE)
        layer_id = "l" + secrets.token_hex(12)
        staging = staged_fs.parent
        (staging / "meta.json").write_text(json.dumps({**meta, "created_at": time.time()}))
        if staged_fs.name != "fs":
            staged_fs.rename(staging / "fs")
        staging.rename(self.layers / layer_id)
        return layer_id

    def collect(self, in_use: set[str], leftovers: bool = False) -> list[str]:
        """Delete layers not in `in_use` and index entries pointing to them; the ids deleted.

        With `leftovers` (at start-up, when no build runs), half-made layers go too.
        """
        removed = []
        for entry in self.layers.iterdir():
            staged = entry.name.startswith(STAGING_PREFIX)
            if (staged and leftovers) or (not staged and entry.name not in in_use):
                with contextlib.suppress(OSError):
                    shutil.rmtree(entry)
                if not staged:
                    removed.append(entry.name)
        for entry in self.index.iterdir():
            with contextlib.suppress(OSError):
                layer_id = entry.read_text()
                stale = bool(layer_id) and not (self.layers / layer_id).is_dir()
                if (entry.name.startswith(STAGING_PREFIX) and leftovers) or stale:
                    entry.unlink()
        return removed
