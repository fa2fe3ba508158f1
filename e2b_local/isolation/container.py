"""The host side of one sandbox's isolation: its directories, cgroups, launch, and teardown."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from e2b_local.isolation import firewall, owners
from e2b_local.isolation.cgroups import Limits, SandboxCgroup
from e2b_local.isolation.disk import SandboxDisk
from e2b_local.isolation.forkserver import ForkServer
from e2b_local.isolation.launcher import LaunchSpec
from e2b_local.isolation.reaping import reap_children
from e2b_local.isolation.rootfs import library_path, python_loader
from e2b_local.isolation.tracking import TrackedProcess
from e2b_local.protocol import AGENT_SOCKET_NAME, BASE_MOUNT

log = logging.getLogger("e2b_local")
# How long a freshly launched agent may take to listen on its socket.
AGENT_START_TIMEOUT = 30.0
# Every launch of this process goes through one fork server (see `forkserver`).
LAUNCHER = ForkServer()


@dataclass
class ContainerInfo:
    """What the server records to find a running sandbox again after a restart."""

    key: str
    directory: str
    pid: int
    slirp_pid: int


class Container:
    """One isolated sandbox on this host, identified by `key` (its directory name)."""

    def __init__(self, sandboxes_dir: Path, key: str, *, id_base: int) -> None:
        self.key = key
        # The host id sandbox root maps to (the server's range, see idranges.py).
        self.id_base = id_base
        self.directory = sandboxes_dir / key
        self.cgroup = SandboxCgroup(key)
        # The sandbox's own filesystem holds the overlay's upper and work directories.
        self.disk = SandboxDisk(self.directory / "disk.img", self.directory / "disk")
        # Formatted empty disks, one per size, next to the sandboxes' directories.
        self.disk_templates = sandboxes_dir.parent / "disk-templates"
        self._dir_fd: int | None = None
        # The sandbox's top process (bubblewrap, the agent's parent), once launched or adopted.
        self.top: TrackedProcess | None = None

    @property
    def upper(self) -> Path:
        return self.disk.mountpoint / "upper"

    @property
    def work(self) -> Path:
        return self.disk.mountpoint / "work"

    @property
    def socket(self) -> Path:
        """The agent's socket, in the sandbox's host-only directory (which the sandbox cannot see)."""
        return self.directory / AGENT_SOCKET_NAME

    @property
    def agent_log(self) -> Path:
        return self.directory / "agent.log"

    @property
    def owner_file(self) -> Path:
        return self.directory / "owner"

    def owner(self) -> int:
        """The host uid that owns this sandbox (claimed on first launch, kept until it is destroyed)."""
        try:
            return int(self.owner_file.read_text())
        except FileNotFoundError:
            pass
        uid = owners.claim(self.directory, on_stale=firewall.remove)
        self.owner_file.write_text(str(uid))
        return uid

    def connect_path(self) -> str:
        """A short path to the agent's socket, whatever the data directory's length.

        Unix socket paths are limited to 108 bytes; going through an open descriptor of the socket's
        directory keeps the path short. The descriptor lives as long as this object.
        """
        if self._dir_fd is None:
            self._dir_fd = os.open(self.directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self._dir_fd}/{AGENT_SOCKET_NAME}"

    def close(self) -> None:
        """Release the descriptors held for `connect_path` and for the top process."""
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        if self.top is not None:
            self.top.close()
            self.top = None

    def adopt(self, pid: int) -> bool:
        """Track the top process recorded as `pid` (after a restart); False when it is gone.

        A pid that now belongs to a process outside this sandbox's cgroup counts as gone.
        """
        if self.top is None:
            self.top = TrackedProcess.adopt(pid, self.key)
        return self.alive()

    def prepare(self, disk_mb: int, upper_from: Path | None = None) -> None:
        """Create the sandbox's private directories and its disk of `disk_mb` MiB.

        With `upper_from` (a saved upper layer), the disk starts with those files; they must fit it.
        """
        self.directory.mkdir(parents=True)
        self.directory.chmod(0o700)
        self.disk.create(self.disk_templates, disk_mb)
        if upper_from is not None:
            try:
                copy_tree(upper_from, self.upper)
            except RuntimeError as exc:
                if "No space left" not in str(exc):
                    raise
                raise RuntimeError(f"the saved files do not fit the sandbox's disk of {disk_mb} MiB") from None
        else:
            self.upper.mkdir()
        (self.directory / "merged").mkdir()
        os.chown(self.upper, self.id_base, self.id_base)
        self._fresh_scratch()

    def prepare_reboot(self) -> None:
        """Ready a stopped sandbox's directories for a new launch on the files it already has."""
        self.close()
        self.disk.ensure_mounted()
        shutil.rmtree(self.work, ignore_errors=True)
        self._fresh_scratch()

    def _fresh_scratch(self) -> None:
        # The overlay's work directory starts empty on every boot.
        self.work.mkdir()
        os.chown(self.work, self.id_base, self.id_base)

    def copy_files(self, destination: Path) -> None:
        """Copy the sandbox's own files (its upper layer) to `destination`, which must not exist.

        Callers freeze a running sandbox around this, so that the copy is one consistent moment.
        """
        self.disk.ensure_mounted()
        copy_tree(self.upper, destination)

    def launch(self, layers: list[Path], limits: Limits, seccomp_file: Path, hostname: str, internet: bool,
               base_layer: Path, agent_package: Path, volumes: list[tuple[str, str]] | None = None,
               agent_env: dict[str, str] | None = None, agent_start: str = "fork",
               fork_kernels: bool = False, merge_pages: bool = False) -> ContainerInfo:
        """Start the sandbox's namespaces and its agent; returns once the launcher has finished.

        `agent_package`: the e2b_local the agent runs (see `agent_bundle`); `volumes`: (host directory,
        mount point) pairs mounted read-write into the sandbox; `agent_env`: variables for the agent's
        own start; `agent_start`: "fork" (from the base layer's zygote) or "exec" (see `launcher`);
        `fork_kernels`: whether Python kernels may be forked from a zygote of these layers (trusted ones only);
        `merge_pages`: whether its forked agent and kernels let KSM merge their memory (see isolation/merging.py).
        """
        self.cgroup.create(limits)
        spec = LaunchSpec(
            cgroup_key=self.key, lowers=[str(p) for p in layers], upper=str(self.upper),
            work=str(self.work), merged=str(self.directory / "merged"), socket=str(self.socket),
            log=str(self.agent_log), owner=self.owner(), id_base=self.id_base,
            workload_procs=_optional_str(self.cgroup.workload_procs()),
            base_layer=str(base_layer), agent_package=str(agent_package),
            seccomp_bpf=str(seccomp_file), loader=python_loader(base_layer),
            library_path=library_path(BASE_MOUNT), hostname=hostname, internet=internet,
            volumes=[[source, target] for source, target in volumes or []], agent_env=dict(agent_env or {}),
            agent_start=agent_start, fork_kernels=fork_kernels, merge_pages=merge_pages,
        )
        spec_file = self.directory / "launch.json"
        spec_file.write_text(spec.to_json())
        pids = LAUNCHER.launch(spec_file)
        if self.top is not None:
            self.top.close()
        self.top = TrackedProcess.adopt(pids["pid"], self.key)
        if self.top is None:
            raise RuntimeError("the sandbox exited as soon as it was launched")
        return ContainerInfo(self.key, str(self.directory), pids["pid"], pids["slirp_pid"])

    def start_failure(self) -> RuntimeError:
        """The error for an agent that did not come up, with the end of its log."""
        reap_children()
        detail = self.agent_log.read_text(errors="replace")[-2000:] if self.agent_log.exists() else ""
        return RuntimeError(f"the sandbox agent did not start: {detail}")

    def freeze(self) -> None:
        """Stop every process where it stands; memory stays as it is."""
        self.cgroup.freeze()

    def thaw(self) -> None:
        self.cgroup.thaw()

    def stop(self) -> None:
        """Kill every process of the sandbox but keep its files, for a later boot on them."""
        self.close()
        self.cgroup.kill_all()
        self.cgroup.remove()

    def destroy(self) -> None:
        """Kill every process of the sandbox and delete everything it had on disk, its disk included."""
        self.close()
        self.cgroup.kill_all()
        self.cgroup.remove()
        self._release_owner()
        self.disk.release(discard_data=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.directory)

    def _release_owner(self) -> None:
        try:
            uid = int(self.owner_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        with contextlib.suppress(RuntimeError):
            firewall.remove(uid)
        owners.release(uid, self.directory)

    def alive(self) -> bool:
        """Whether the sandbox's tracked top process still runs (and its cgroup holds processes)."""
        return self.top is not None and self.top.alive() and bool(self.cgroup.pids())


def _optional_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def copy_tree(source: Path, destination: Path) -> None:
    """Copy a sandbox file tree with owners, modes, times, links and overlay xattrs (whiteouts, opaque dirs).

    `--reflink=auto` shares data blocks on filesystems that can (btrfs, xfs), a plain copy elsewhere.
    """
    # Success is read from the output: the server's reaper (waitpid(-1)) may take cp's exit status.
    result = subprocess.run(["sh", "-c", 'cp -a --reflink=auto -- "$0" "$1" && echo copied', str(source),
                             str(destination)], capture_output=True, text=True)
    if result.stdout.strip() != "copied":
        shutil.rmtree(destination, ignore_errors=True)
        raise RuntimeError(f"copying sandbox files failed: {result.stderr.strip()[-1000:]}")
