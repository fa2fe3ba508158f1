"""Per-sandbox cgroups: memory, process and CPU limits, freezing, killing and usage readings.

cgroup v2 is used when the unified hierarchy has the controllers we need; otherwise the v1
controllers (memory, pids, cpu, cpuacct, freezer), which is what many hosts still mount.

With v1, memory has one level more: everything the agent starts runs in the sandbox's `work`
memory cgroup, limited to the sandbox's memory, while the agent itself stays in the sandbox's own,
which allows a little more (AGENT_RESERVE_MB). An out-of-memory kill caused by the sandbox's programs
then happens inside `work`, among them: never the agent, whatever oom_score_adj may say (lowering it
needs CAP_SYS_RESOURCE, which some hosts withhold from root).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Every sandbox's cgroup lives under this name, so a listing of ours never touches anyone else's.
PARENT = "e2b-local"
# The CFS period the CPU quota is expressed in (the kernel's default period).
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
# The memory cgroup, under the sandbox's, of every process the agent starts (v1).
WORKLOAD = "work"
# What the agent may use on top of the sandbox's memory limit.
AGENT_RESERVE_MB = 128


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use."""

    memory_mb: int
    cpu_count: int
    max_pids: int


@dataclass(frozen=True)
class Usage:
    """A reading of a sandbox's cgroup."""

    cpu_usage_ns: int
    mem_used: int
    mem_cache: int


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def unified_has_controllers() -> bool:
    """True when cgroup v2 provides memory, pids and cpu (a pure v2 host)."""
    try:
        available = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
    except FileNotFoundError:
        return False
    return {"memory", "pids", "cpu"} <= set(available)


class SandboxCgroup:
    """The cgroup(s) of one sandbox, addressed by a stable key (the sandbox's directory name)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.v2 = unified_has_controllers()

    # -- paths -----------------------------------------------------------------------------------
    def _v1(self, controller: str) -> Path:
        return CGROUP_ROOT / controller / PARENT / self.key

    def _v2(self) -> Path:
        return CGROUP_ROOT / PARENT / self.key

    def directories(self) -> list[Path]:
        """Every cgroup directory this sandbox owns."""
        if self.v2:
            return [self._v2()]
        return [self._v1(c) for c in V1_CONTROLLERS]

    # -- life ------------------------------------------------------------------------------------
    def create(self, limits: Limits) -> None:
        """Create the cgroups and apply the limits."""
        quota = str(limits.cpu_count * CPU_PERIOD_US)
        memory = str(limits.memory_mb * 1024 * 1024)
        if self.v2:
            parent = CGROUP_ROOT / PARENT
            parent.mkdir(exist_ok=True)
            _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
            cg = self._v2()
            cg.mkdir(exist_ok=True)
            _write(cg / "memory.max", memory)
            _write(cg / "memory.swap.max", "0")
            _write(cg / "pids.max", str(limits.max_pids))
            _write(cg / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        for controller in V1_CONTROLLERS:
            self._v1(controller).mkdir(parents=True, exist_ok=True)
        work = self._v1("memory") / WORKLOAD
        work.mkdir(exist_ok=True)
        whole = str((limits.memory_mb + AGENT_RESERVE_MB) * 1024 * 1024)
        # Parent first: a child's limit may not exceed what the parent allows.
        for directory, limit in ((self._v1("memory"), whole), (work, memory)):
            _write(directory / "memory.limit_in_bytes", limit)
            # Without swap accounting the file is absent; the memory limit alone then applies.
            with contextlib.suppress(OSError):
                _write(directory / "memory.memsw.limit_in_bytes", limit)
        _write(self._v1("pids") / "pids.max", str(limits.max_pids))
        _write(self._v1("cpu") / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(self._v1("cpu") / "cpu.cfs_quota_us", quota)

    def workload_procs(self) -> Path | None:
        """The `cgroup.procs` file a process writes "0" to, to join the workload (v1); None with v2."""
        return None if self.v2 else self._v1("memory") / WORKLOAD / "cgroup.procs"

    def add(self, pid: int) -> None:
        """Move a process (and so its future children) into the sandbox's cgroups."""
        for directory in self.directories():
            _write(directory / "cgroup.procs", str(pid))

    def exists(self) -> bool:
        return self.directories()[0].is_dir()

    def pids(self) -> list[int]:
        """The processes currently in the sandbox."""
        directory = self._v2() if self.v2 else self._v1("pids")
        try:
            return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def freeze(self) -> None:
        """Stop every process of the sandbox where it stands (pause keeps memory as it is)."""
        if self.v2:
            _write(self._v2() / "cgroup.freeze", "1")
        else:
            _write(self._v1("freezer") / "freezer.state", "FROZEN")
        self._wait_frozen(True)

    def thaw(self) -> None:
        """Let a frozen sandbox run again."""
        if self.v2:
            _write(self._v2() / "cgroup.freeze", "0")
        else:
            _write(self._v1("freezer") / "freezer.state", "THAWED")
        self._wait_frozen(False)

    def is_frozen(self) -> bool:
        if self.v2:
            return "frozen 1" in (self._v2() / "cgroup.events").read_text()
        return (self._v1("freezer") / "freezer.state").read_text().strip() == "FROZEN"

    def _wait_frozen(self, frozen: bool, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.is_frozen() != frozen and time.monotonic() < deadline:
            time.sleep(0.001)

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process of the sandbox and wait until the cgroup is empty."""
        if not self.exists():
            return
        if self.v2 and (self._v2() / "cgroup.kill").exists():
            _write(self._v2() / "cgroup.kill", "1")
        else:
            # Frozen processes cannot fork away from the kill; SIGKILL is delivered once thawed.
            with contextlib.suppress(OSError):
                self.freeze()
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                self.thaw()
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def remove(self) -> None:
        """Delete the (empty) cgroup directories."""
        if not self.v2:
            with contextlib.suppress(FileNotFoundError):
                (self._v1("memory") / WORKLOAD).rmdir()
        for directory in self.directories():
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()

    # -- readings --------------------------------------------------------------------------------
    def usage(self) -> Usage:
        """CPU time used so far, memory in use and page cache."""
        if self.v2:
            cpu = _read_kv(self._v2() / "cpu.stat").get("usage_usec", 0) * 1000
            stat = _read_kv(self._v2() / "memory.stat")
            current = int((self._v2() / "memory.current").read_text())
            cache = stat.get("file", 0)
            return Usage(cpu_usage_ns=cpu, mem_used=max(current - cache, 0), mem_cache=cache)
        cpu = int((self._v1("cpuacct") / "cpuacct.usage").read_text())
        stat = _read_kv(self._v1("memory") / "memory.stat")
        usage = int((self._v1("memory") / "memory.usage_in_bytes").read_text())
        cache = stat.get("total_cache", stat.get("cache", 0))
        return Usage(cpu_usage_ns=cpu, mem_used=max(usage - cache, 0), mem_cache=cache)

    def kernel_memory(self) -> int:
        """Bytes of kernel memory (slab, stacks, page tables) charged to the sandbox's cgroup and those below it."""
        if self.v2:
            return _read_kv(self._v2() / "memory.stat").get("kernel", 0)
        return int((self._v1("memory") / "memory.kmem.usage_in_bytes").read_text())

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit."""
        try:
            if self.v2:
                return _read_kv(self._v2() / "memory.events").get("oom_kill", 0)
            # v1 counts each kill in the victim's own cgroup only.
            return sum(_read_kv(d / "memory.oom_control").get("oom_kill", 0)
                       for d in (self._v1("memory"), self._v1("memory") / WORKLOAD) if d.is_dir())
        except FileNotFoundError:
            return 0


def leftover_cgroups() -> list[Path]:
    """Every sandbox cgroup directory that exists now (for leak checks)."""
    parents = [CGROUP_ROOT / PARENT] if unified_has_controllers() else [
        CGROUP_ROOT / c / PARENT for c in V1_CONTROLLERS
    ]
    return [p for parent in parents if parent.is_dir() for p in parent.iterdir() if p.is_dir()]
