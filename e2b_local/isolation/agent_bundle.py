"""The agent's code as sandboxes see it: the sandbox side of e2b_local, compiled for the sandbox's Python.

A sandbox runs its agent with the base root filesystem's Python and sees the agent's code read-only,
so nothing there can write bytecode: from the bare sources, every boot would compile each module of
the agent again (about a quarter of its start). The bundle is a copy of the sources with bytecode
compiled once by that Python, named by a digest of the sources and of the base layer, so that a
changed checkout or a rebuilt base gets a bundle of its own. Only the sandbox side is copied: the
host's code is no business of a sandbox.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import e2b_local
from e2b_local.isolation.rootfs import library_path, python_loader
from e2b_local.protocol import AGENT_MOUNT

PACKAGE_DIRECTORY = Path(e2b_local.__file__).parent
# What of e2b_local runs inside sandboxes (tests/unit/test_imports.py checks that it imports nothing else).
SANDBOX_SIDE = ("__init__.py", "protocol.py", "linux.py", "asgi.py", "agent", "interpreter", "mcp_gateway", "zygote")
# A bundle that no sandbox has been booted with for this long is removed when a new one is made.
UNUSED_DAYS = 7
# Never stale, since a bundle's name is the digest of its sources: sandboxes skip the source's stat.
_COMPILE = (
    "import compileall, py_compile, sys;"
    "ok = compileall.compile_dir(sys.argv[1], ddir=sys.argv[2], quiet=1, workers=1,"
    " invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH);"
    "sys.exit(0 if ok else 1)"
)


def sandbox_sources(package: Path = PACKAGE_DIRECTORY) -> list[Path]:
    """The files of the sandbox side of `package`, relative to it, in a stable order."""
    found: list[Path] = []
    for name in SANDBOX_SIDE:
        top = package / name
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        found += [p.relative_to(package) for p in paths if "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return found


def copy_sandbox_side(package: Path, target: Path, sources: list[Path] | None = None) -> Path:
    """Copy the sandbox side of `package` (or `sources` of it) to `target`, keeping modes; returns `target`."""
    for relative in sources if sources is not None else sandbox_sources(package):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(package / relative, target / relative)
    return target


class AgentBundles:
    """Compiled bundles of the agent in `directory`, made on first use for each base layer."""

    def __init__(self, directory: Path, package: Path = PACKAGE_DIRECTORY) -> None:
        self.directory = directory
        self.package = package
        self._lock = threading.Lock()
        self._ready: dict[Path, Path] = {}

    def path(self, base_layer: Path) -> Path:
        """The package directory to mount as the sandbox's e2b_local, compiled by `base_layer`'s Python."""
        with self._lock:
            if base_layer not in self._ready:
                self._ready[base_layer] = self._ensure(base_layer)
            package = self._ready[base_layer]
        # Marks the bundle as in use, so that no server prunes it (see `_prune`).
        os.utime(package.parent)
        return package

    def _prune(self, keep: Path) -> None:
        """Remove the bundles no server has booted a sandbox with for UNUSED_DAYS: each code change makes one."""
        cutoff = time.time() - UNUSED_DAYS * 86400
        for old in self.directory.glob("agent-*"):
            with contextlib.suppress(OSError):
                if old != keep and old.stat().st_mtime < cutoff:
                    shutil.rmtree(old)

    def _ensure(self, base_layer: Path) -> Path:
        sources = sandbox_sources(self.package)
        digest = hashlib.sha256(base_layer.name.encode())
        for relative in sources:
            source = self.package / relative
            digest.update(f"\0{relative}\0{source.stat().st_mode & 0o111:o}\0".encode() + source.read_bytes())
        target = self.directory / f"agent-{digest.hexdigest()[:12]}"
        if target.is_dir():
            return target / "e2b_local"
        self.directory.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-agent-", dir=self.directory))
        try:
            package = copy_sandbox_side(self.package, work / "e2b_local", sources)
            subprocess.run([*_python(base_layer), "-S", "-c", _COMPILE, str(package), f"{AGENT_MOUNT}/e2b_local"],
                           env={"PYTHONHOME": str(base_layer / "usr")}, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
            # Readable by every sandbox's users, whose ids are not the host's; executables (the sudo shim) stay so.
            for root, _, files in os.walk(work):
                os.chmod(root, 0o755)
                for name in files:
                    path = os.path.join(root, name)
                    os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
            self._prune(keep=target)
            try:
                work.rename(target)
            except OSError:
                # Another server made the same bundle meanwhile: theirs serves as well.
                if not target.is_dir():
                    raise
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"compiling the agent failed: {error.stderr.decode(errors='replace')[-2000:]}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target / "e2b_local"


def _python(base_layer: Path) -> list[str]:
    """The command that runs the base layer's Python on the host, with the base's own loader and libraries.

    The base layer is e2b-local's own build, read-only to every sandbox (templates' layers lie above
    it), so this runs nothing that a sandbox or a template wrote.
    """
    root = str(base_layer)
    return [root + python_loader(base_layer), "--library-path", library_path(root), root + "/usr/bin/python3"]
