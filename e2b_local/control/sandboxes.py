"""Sandbox lifecycles: create (from a warm pool when possible), find, time out, boot again, and kill.

The manager owns the registry, the containers and a client per sandbox agent. Blocking work
(launching namespaces, waiting for an agent, deleting directories) runs in worker threads so that
the event loop keeps serving every other sandbox meanwhile; `scheduling` keeps boots, teardowns and
metrics in separate threads so that none waits for another. Pausing and resuming live in
`pausing.py`, snapshots and forks in `snapshots.py`; both build on the primitives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import signal
import sqlite3
import string
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from e2b_local.config import Paths
from e2b_local.control import egress, pausing
from e2b_local.control.errors import ApiError, not_found
from e2b_local.control.metrics import SAMPLE_INTERVAL, MetricsSeries
from e2b_local.control.registry import Registry, SandboxRecord
from e2b_local.control.scheduling import Priority, Workers
from e2b_local.control.snapshots import SnapshotStore
from e2b_local.control.upstream import AgentUpstream
from e2b_local.isolation import firewall, idranges, network
from e2b_local.isolation.cgroups import Limits
from e2b_local.isolation.container import AGENT_START_TIMEOUT, Container, reap_children
from e2b_local.isolation.firewall import EgressPolicy
from e2b_local.isolation.rootfs import TEMPLATES, RootfsStore
from e2b_local.isolation.seccomp import compiled_filter
from e2b_local.isolation.tracking import TrackedProcess

log = logging.getLogger("e2b_local")

# E2B's default sandbox lifetime when create does not name one.
DEFAULT_TIMEOUT = 300
# E2B's upper bound for a sandbox's continuous runtime (Pro plan): 24 hours.
MAX_TIMEOUT = 24 * 3600
# E2B sandbox ids are 20 lowercase letters and digits.
ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 20
# Defaults of E2B's base template: 2 vCPUs; memory and disk are generous for one machine.
DEFAULT_CPU_COUNT = int(os.environ.get("E2B_LOCAL_CPU_COUNT", "2"))
DEFAULT_MEMORY_MB = int(os.environ.get("E2B_LOCAL_MEMORY_MB", "1024"))
DEFAULT_DISK_MB = int(os.environ.get("E2B_LOCAL_DISK_MB", "10240"))
# Enough for any ordinary workload, and a ceiling for fork bombs.
DEFAULT_MAX_PIDS = int(os.environ.get("E2B_LOCAL_MAX_PIDS", "1024"))
# Pre-started sandboxes kept per template, so that create returns at once.
POOL_SIZE = int(os.environ.get("E2B_LOCAL_POOL_SIZE", "1"))
# How long shutdown waits for sandboxes still booting, so it can discard them.
SHUTDOWN_BOOT_WAIT = 30.0
# How often expiry is checked.
TIMEOUT_TICK = 0.25
# How often every running sandbox's processes are checked, besides the pidfd that reports its exit.
LIVENESS_TICK = 2.0
# The envd version we report: new enough that the SDK enables every feature (see the protocol notes).
ENVD_VERSION = "0.6.7"
CLIENT_ID = "local"
# What a failed write to the registry raises.
STORAGE_ERRORS = (sqlite3.Error, OSError)


def new_id(prefix: str = "") -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def default_limits() -> Limits:
    return Limits(memory_mb=DEFAULT_MEMORY_MB, cpu_count=DEFAULT_CPU_COUNT, max_pids=DEFAULT_MAX_PIDS)


def builtin_template(template: str) -> str | None:
    """The built-in template `template` names (`name`, `name:tag` or `namespace/name`), if any."""
    name = template.split("/")[-1].split(":")[0]
    return name if name in TEMPLATES else None


@dataclass
class Source:
    """What a new sandbox starts from: a built-in template, or saved files over a template's layers."""

    template_id: str
    alias: str | None
    base_template: str
    layers: list[Path] | None = None  # None: the template's current layers
    files: Path | None = None  # an upper layer to copy; None: empty
    env_vars: dict[str, str] = field(default_factory=dict)
    # A custom template's CPU and memory (None: the defaults), and what runs once its agent is up
    # (the template's start command and ready check), before create returns.
    limits: Limits | None = None
    after_boot: Callable[[httpx.AsyncClient], Awaitable[None]] | None = None


@dataclass
class Booted:
    """A sandbox whose agent is running, not yet (or no longer) assigned to a record."""

    container: Container
    pid: int
    slirp_pid: int
    internet: bool
    layers: list[Path]


@dataclass
class Live:
    """Runtime state of a registered sandbox that is not persisted."""

    container: Container
    client: httpx.AsyncClient
    metrics: MetricsSeries = field(default_factory=MetricsSeries)
    upstream: AgentUpstream | None = None
    # A duplicate of the top process's pidfd, registered with the event loop while it is watched.
    watch_fd: int | None = None

    def __post_init__(self) -> None:
        # The proxy's own connections; the httpx client serves the control plane's calls (/init, health).
        self.upstream = AgentUpstream(self.container.connect_path())

    async def aclose(self) -> None:
        """Close every connection to the agent (before it goes away or is replaced)."""
        await self.client.aclose()
        if self.upstream is not None:
            await self.upstream.aclose()


class SandboxManager:
    """Creates, tracks and destroys sandboxes."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        paths.sandboxes.mkdir(parents=True, exist_ok=True)
        # Before the registry: a data directory that has one already predates per-server ranges.
        self.id_base = idranges.server_range(paths.home)
        self.registry = Registry(paths.registry)
        self.rootfs = RootfsStore(paths.rootfs)
        self.seccomp = compiled_filter(paths.home / "seccomp.bpf")
        # Every sandbox directory and cgroup of this server starts with this, so that several servers on
        # one machine (say, test runs) can tell their sandboxes from each other's.
        self.key_prefix = "k" + hashlib.sha256(str(paths.home).encode()).hexdigest()[:6] + "-"
        self.records: dict[str, SandboxRecord] = {}
        self.live: dict[str, Live] = {}
        self.snapshots = SnapshotStore(paths.snapshots, self.registry)
        self.pool: dict[str, list[Booted]] = {t: [] for t in TEMPLATES}
        # Looked up by `resolve` after the built-in templates: each maps a `templateID` to a Source or None.
        self.template_resolvers: list[Callable[[str], Source | None]] = []
        self._pool_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self.workers = Workers()
        # Sandboxes whose timeout is being acted on, so that the next tick does not act again.
        self._expiring: set[str] = set()
        # Boots in worker threads, and the sandboxes they started that no coroutine has taken yet.
        self._boot_lock = threading.Lock()
        self._in_flight = 0
        self._unclaimed: set[Container] = set()
        self._stopping = False

    def _container(self, key: str) -> Container:
        return Container(self.paths.sandboxes, key, id_base=self.id_base)

    # -- startup and shutdown ----------------------------------------------------------------------
    async def start(self) -> None:
        """Adopt the sandboxes that survived a restart, clean up the rest, start background work."""
        await asyncio.to_thread(self.rootfs.ensure_base)
        # Before any sandbox can send a packet: the host-side rules that keep every sandbox off the host.
        await asyncio.to_thread(firewall.install)
        if network.slirp4netns_path() is not None and await asyncio.to_thread(network.ensure_tun_device):
            log.info("made %s usable by unprivileged programs (mode 0666, as udev sets it)", network.TUN_DEVICE)
        known = set()
        for record in self.registry.all():
            container = self._container(record.key)
            if not container.directory.is_dir():
                # Destroyed by a kill that could not delete the record (its disk was full): gone for good.
                log.info("sandbox %s was destroyed; removing its record", record.sandbox_id)
                self._forget(record.sandbox_id)
                continue
            # By the recorded pid only if that process is still in the sandbox's cgroup: it may
            # have been reused by an unrelated process since the sandbox died.
            alive = await asyncio.to_thread(container.adopt, record.pid)
            if record.state == "running" and not alive:
                if (record.lifecycle or {}).get("onTimeout") != "pause":
                    log.info("sandbox %s did not survive; removing it", record.sandbox_id)
                    await asyncio.to_thread(container.destroy)
                    self._forget(record.sandbox_id)
                    continue
                # Asked to be paused rather than lost: keep its files, resume will boot on them.
                log.info("sandbox %s did not survive (machine restarted?); keeping its files, paused",
                         record.sandbox_id)
                await asyncio.to_thread(container.stop)  # helpers left behind (slirp4netns, say)
                # Unrecorded, it is found dead again at the next start and kept paused then.
                with contextlib.suppress(*STORAGE_ERRORS):
                    self.commit(record, state="paused", pause_mode="filesystem", end_at=time.time())
            elif alive:
                # A crash may have come between a freeze and its thaw (a snapshot's copy, say): running
                # sandboxes run, paused ones stay frozen, whatever happened meanwhile.
                await asyncio.to_thread(container.freeze if record.state == "paused" else container.thaw)
            else:
                await asyncio.to_thread(container.stop)  # helpers left behind (slirp4netns, say)
            known.add(record.key)
            self.records[record.sandbox_id] = record
            live = self.live[record.sandbox_id] = Live(container, _agent_client(container))
            self._watch(record.sandbox_id, live)
        for leftover in self.paths.sandboxes.iterdir():
            if leftover.name not in known:
                await asyncio.to_thread(self._container(leftover.name).destroy)
        await asyncio.to_thread(self.snapshots.clean_up)
        self._tasks = [asyncio.create_task(self._expire_loop()), asyncio.create_task(self._metrics_loop()),
                       asyncio.create_task(self._liveness_loop())]
        for template in TEMPLATES:
            self._refill(template)

    async def stop(self) -> None:
        """Stop background work; sandboxes keep running (pool sandboxes are discarded)."""
        self._stopping = True
        for task in [*self._tasks, *self._pool_tasks.values()]:
            task.cancel()
        # Boots run in threads that cancellation cannot stop: wait for them, then discard what they
        # started and nobody claimed (a sandbox left behind here would run with no server to kill it).
        deadline = time.monotonic() + SHUTDOWN_BOOT_WAIT
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with self._boot_lock:
            unclaimed, self._unclaimed = list(self._unclaimed), set()
        for container in unclaimed:
            await asyncio.to_thread(container.destroy)
        for booted_list in self.pool.values():
            for booted in booted_list:
                await asyncio.to_thread(booted.container.destroy)
            booted_list.clear()
        for live in self.live.values():
            self._unwatch(live)
            await live.aclose()
        self.workers.shutdown()
        self.registry.close()

    # -- pool ----------------------------------------------------------------------------------------
    def _refill(self, template: str) -> None:
        if POOL_SIZE <= 0 or (not self.rootfs.is_built(template) and template != "base"):
            return
        task = self._pool_tasks.get(template)
        if task is None or task.done():
            self._pool_tasks[template] = asyncio.create_task(self._refill_loop(template))

    async def _refill_loop(self, template: str) -> None:
        while len(self.pool[template]) < POOL_SIZE:
            try:
                booted = await self._boot(template, internet=True, priority=Priority.POOL)
            except Exception:
                log.exception("could not pre-start a %s sandbox", template)
                return
            self.pool[template].append(booted)

    async def _boot(self, template: str, internet: bool, layers: list[Path] | None = None,
                    files: Path | None = None, priority: Priority = Priority.REQUESTED,
                    limits: Limits | None = None) -> Booted:
        """Start a new sandbox of `template`, on `files` (a saved upper layer) if given.

        It returns once the agent answers: a boot holds one of the few boot slots until then.
        """
        layers = layers or await asyncio.to_thread(self.rootfs.layers, template)
        container = self._container(new_id(self.key_prefix))

        def boot() -> Booted:
            with self._boot_lock:
                self._in_flight += 1
            try:
                container.prepare(DEFAULT_DISK_MB, upper_from=files)
                pid, slirp_pid = self._launch(container, layers, internet, limits)
                if self._stopping:
                    raise RuntimeError("the server is shutting down")
                with self._boot_lock:
                    self._unclaimed.add(container)
            except BaseException:
                container.destroy()
                raise
            finally:
                with self._boot_lock:
                    self._in_flight -= 1
            return Booted(container, pid, slirp_pid, internet, layers)

        async with self.workers.boot_slots.hold(priority):
            booted = await self.workers.run(self.workers.boots, boot)
            try:
                await _agent_ready(container)
            except BaseException:
                # On shutdown, stop() discards what nobody claimed; otherwise it goes now.
                if not self._stopping:
                    with self._boot_lock:
                        self._unclaimed.discard(container)
                    self.workers.discard(container.destroy, f"sandbox {container.key}")
                raise
        with self._boot_lock:
            self._unclaimed.discard(container)
        return booted

    def _launch(self, container: Container, layers: list[Path], internet: bool,
                limits: Limits | None = None) -> tuple[int, int]:
        """Start the namespaces and agent of a prepared container (its socket listens at once)."""
        info = container.launch(layers, limits or default_limits(), self.seccomp, "e2b-sandbox", internet,
                                base_layer=layers[-1])
        return info.pid, info.slirp_pid

    async def _take(self, template: str, internet: bool) -> Booted:
        if internet and self.pool[template]:
            booted = self.pool[template].pop(0)
            self._refill(template)
            if booted.container.alive():
                return booted
            await asyncio.to_thread(booted.container.destroy)
        booted = await self._boot(template, internet)
        self._refill(template)
        return booted

    # -- operations ----------------------------------------------------------------------------------
    def resolve(self, template: str) -> Source:
        """What `templateID` names: a built-in template, or a snapshot (by id or name, with optional tag)."""
        name = builtin_template(template)
        if name is not None:
            return Source(template_id=name, alias=name, base_template=name)
        for resolver in self.template_resolvers:
            source = resolver(template)
            if source is not None:
                return source
        snapshot = self.snapshots.for_template(template)
        if snapshot is None:
            raise ApiError(404, f"template '{template}' not found")
        layers = [Path(p) for p in snapshot.layers]
        if not all(p.is_dir() for p in layers):
            log.warning("snapshot %s: its template layers were rebuilt; using the current ones", snapshot.snapshot_id)
            layers = []
        return Source(template_id=snapshot.template_id, alias=snapshot.name, base_template=snapshot.base_template,
                      layers=layers or None, files=self.snapshots.files(snapshot), env_vars=snapshot.env_vars)

    async def create(self, template: str, timeout: int | None, metadata: dict[str, str], env_vars: dict[str, str],
                     allow_internet_access: bool | None, network: dict[str, Any] | None,
                     lifecycle: dict[str, Any] | None, auto_pause_memory: bool = True) -> SandboxRecord:
        return await self.spawn(self.resolve(template), timeout, metadata, env_vars, allow_internet_access, network,
                                lifecycle, auto_pause_memory)

    async def spawn(self, source: Source, timeout: int | None, metadata: dict[str, str], env_vars: dict[str, str],
                    allow_internet_access: bool | None, network: dict[str, Any] | None,
                    lifecycle: dict[str, Any] | None, auto_pause_memory: bool = True) -> SandboxRecord:
        """Start and register a new sandbox from `source`."""
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        check_timeout(timeout)
        allowed = allow_internet_access is not False
        policy = await self.egress_policy(network, allowed)
        internet = not policy.denies_everything
        if source.files is None and source.layers is None:
            booted = await self._take(source.base_template, internet)
        else:
            booted = await self._boot(source.base_template, internet, source.layers, source.files,
                                      limits=source.limits)
        now = time.time()
        limits = source.limits or default_limits()
        record = SandboxRecord(
            sandbox_id=new_id(), template_id=source.template_id, key=booted.container.key,
            access_token=secrets.token_hex(16), started_at=now, end_at=now + timeout, alias=source.alias,
            metadata=dict(metadata), env_vars={**source.env_vars, **env_vars}, cpu_count=limits.cpu_count,
            memory_mb=limits.memory_mb, disk_size_mb=DEFAULT_DISK_MB, allow_internet_access=allowed,
            network=network, lifecycle=lifecycle, pid=booted.pid, slirp_pid=booted.slirp_pid,
            layers=[str(p) for p in booted.layers], base_template=source.base_template, timeout=timeout,
            auto_pause_memory=auto_pause_memory,
        )
        client = _agent_client(booted.container)
        try:
            await self._enforce(record, policy, internet)
            await self._init_agent(record, client)
            if source.after_boot is not None:
                await source.after_boot(client)
            # Unrecorded, the sandbox would outlive a restart unknown: it exists once its record does.
            self.registry.put(record)
        except BaseException:
            await client.aclose()
            await asyncio.to_thread(booted.container.destroy)
            raise
        self.records[record.sandbox_id] = record
        live = self.live[record.sandbox_id] = Live(booted.container, client)
        self._watch(record.sandbox_id, live)
        # A first reading at once; off the event loop, since a sandbox started from a snapshot may
        # have many files to measure.
        await self.workers.run(self.workers.monitor, self._sample, record, live)
        return record

    async def boot_again(self, record: SandboxRecord) -> dict[str, Any]:
        """Start a fresh agent on the sandbox's own files (a filesystem resume or a reboot).

        Whatever still runs in the sandbox is killed first. The agent gets the sandbox's env vars and
        token again, and the network rules are applied to the new network namespace. Returns the
        record's fields that changed (for the caller to commit); on failure the sandbox is stopped.
        """
        live = self.live[record.sandbox_id]
        self._unwatch(live)
        await live.aclose()
        container = live.container
        layers = [Path(p) for p in record.layers]
        if not layers or not all(p.is_dir() for p in layers):
            layers = await asyncio.to_thread(self.rootfs.layers, record.base_template or record.template_id)
        policy = await self.egress_policy(record.network, record.allow_internet_access)
        internet = not policy.denies_everything

        def boot() -> tuple[int, int]:
            container.stop()
            container.prepare_reboot()
            # With the limits it was created with (a custom template's own CPU and memory).
            return self._launch(container, layers, internet,
                                Limits(memory_mb=record.memory_mb, cpu_count=record.cpu_count,
                                       max_pids=DEFAULT_MAX_PIDS))

        try:
            async with self.workers.boot_slots.hold(Priority.REQUESTED):
                pid, slirp_pid = await self.workers.run(self.workers.boots, boot)
                await _agent_ready(container)
            live.client = _agent_client(container)
            live.upstream = AgentUpstream(container.connect_path())
            self._watch(record.sandbox_id, live)
            await self._enforce(record, policy, internet)
            await self._init_agent(record, live.client)
        except BaseException:
            await self.stop_booted(live)
            raise
        return {"pid": pid, "slirp_pid": slirp_pid, "layers": [str(p) for p in layers]}

    async def stop_booted(self, live: Live) -> None:
        """Stop every process of a sandbox and close its connections; its files stay."""
        self._unwatch(live)
        await live.aclose()
        await self.workers.run(self.workers.teardown, live.container.stop)

    def commit(self, record: SandboxRecord, **changes: Any) -> None:
        """Change `record` in the registry, then in memory: if storing fails, nothing has changed."""
        self.registry.put(dataclasses.replace(record, **changes))
        for name, value in changes.items():
            setattr(record, name, value)

    async def egress_policy(self, network: dict[str, Any] | None, allow_internet_access: bool) -> EgressPolicy:
        """The outbound rules of these settings (domain names are looked up in a worker thread)."""
        if not network or not network.get("allowOut"):
            return egress.policy(network, allow_internet_access)  # no names to look up: no thread hop
        egress.check(network)
        return await asyncio.to_thread(egress.policy, network, allow_internet_access)

    async def _enforce(self, record: SandboxRecord, policy: EgressPolicy, internet: bool,
                       replacing: bool = False) -> None:
        """Install the sandbox's outbound rules in the host's firewall."""
        if not policy.restricts and not replacing:
            return  # a fresh owner has no rules to remove
        container = self.live[record.sandbox_id].container if record.sandbox_id in self.live else \
            self._container(record.key)
        try:
            await asyncio.to_thread(firewall.apply, container.owner(), policy)
        except RuntimeError as exc:
            raise ApiError(500, str(exc)) from None

    async def update_network(self, sandbox_id: str, settings: dict[str, Any] | None,
                             allow_internet_access: bool) -> None:
        """Replace a running sandbox's outbound rules (E2B's update has replace semantics)."""
        policy = await self.egress_policy(settings, allow_internet_access)
        async with self.lock(sandbox_id):
            record = self.get(sandbox_id)
            if record.state != "running":
                raise ApiError(409, f"sandbox '{sandbox_id}' is paused; resume it before changing its network")
            internet = not policy.denies_everything
            await self._enforce(record, policy, internet, replacing=True)
            if internet and not record.slirp_pid:
                # Created without any way out: give it its user-mode network stack now, rules first.
                container = self.live[sandbox_id].container

                def still_ours() -> bool:
                    top = container.top
                    return top is not None and top.pid == record.pid and top.alive()

                def attach() -> int:
                    pid = network.attach_slirp4netns(record.pid, container.owner(),
                                                     str(container.directory / "slirp4netns.log"), verify=still_ours)
                    container.cgroup.add(pid)  # frozen, killed and accounted with the sandbox
                    return pid

                slirp_pid = await asyncio.to_thread(attach)
                try:
                    self.commit(record, slirp_pid=slirp_pid)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.kill(slirp_pid, signal.SIGKILL)
                    raise
            self.commit(record, network=settings, allow_internet_access=allow_internet_access)

    async def _init_agent(self, record: SandboxRecord, client: httpx.AsyncClient) -> None:
        response = await client.post("/init", json={
            "envVars": record.env_vars, "sandboxId": record.sandbox_id,
            "templateId": record.template_id, "defaultUser": "user", "defaultWorkdir": "/home/user",
            "hostname": "e2b-" + record.sandbox_id[:8],
        })
        response.raise_for_status()

    def get(self, sandbox_id: str) -> SandboxRecord:
        record = self.records.get(sandbox_id)
        if record is None:
            raise not_found(sandbox_id)
        return record

    def list(self) -> list[SandboxRecord]:
        return list(self.records.values())

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    async def kill(self, sandbox_id: str) -> None:
        """Destroy the sandbox: every process, mount, cgroup, network stack and file."""
        async with self.lock(sandbox_id):
            await self._destroy(sandbox_id)
        self._locks.pop(sandbox_id, None)
        reap_children()

    async def _destroy(self, sandbox_id: str) -> None:
        # Under the sandbox's lock. The sandbox goes first and its record after, so that a record
        # that cannot be deleted (a full disk) names a sandbox whose directory is gone: the next
        # start drops such records.
        record = self.records.pop(sandbox_id, None)
        if record is None:
            raise not_found(sandbox_id)
        live = self.live.pop(sandbox_id, None)
        try:
            if live is not None:
                self._unwatch(live)
                await live.aclose()
            container = live.container if live else self._container(record.key)
            await self.workers.run(self.workers.teardown, container.destroy)
        finally:
            self._forget(sandbox_id)

    def _forget(self, sandbox_id: str) -> None:
        """Delete a destroyed sandbox's record; when the disk is full, the next start does."""
        try:
            self.registry.delete(sandbox_id)
        except STORAGE_ERRORS as exc:
            log.warning("sandbox %s is destroyed but its record could not be deleted (%s); "
                        "it is removed at the next start", sandbox_id, exc)

    # -- dead agents ---------------------------------------------------------------------------------
    def _watch(self, sandbox_id: str, live: Live) -> None:
        """Have the event loop report the exit of the sandbox's top process (its agent's parent)."""
        self._unwatch(live)
        top = live.container.top
        if top is None:
            return
        # A duplicate of the pidfd, owned here: the container may close its own at any time.
        live.watch_fd = os.dup(top.fd)
        asyncio.get_running_loop().add_reader(live.watch_fd, self._on_exit, sandbox_id, live, top)

    def _unwatch(self, live: Live) -> None:
        if live.watch_fd is not None:
            asyncio.get_running_loop().remove_reader(live.watch_fd)
            os.close(live.watch_fd)
            live.watch_fd = None

    def _on_exit(self, sandbox_id: str, live: Live, top: TrackedProcess | None) -> None:
        self._unwatch(live)
        task = asyncio.create_task(self._agent_died(sandbox_id, live, top))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _agent_died(self, sandbox_id: str, live: Live, top: TrackedProcess | None) -> None:
        """Clean up after a sandbox whose processes ended on their own, as a kill or a restart would."""
        async with self.lock(sandbox_id):
            record = self.records.get(sandbox_id)
            # A kill, a pause or a reboot that ended the process on purpose has already moved on.
            if record is None or self.live.get(sandbox_id) is not live or live.container.top is not top:
                return
            if record.state != "running":
                return
            removed = (record.lifecycle or {}).get("onTimeout") != "pause"
            if removed:
                log.warning("sandbox %s: its agent exited; removing the sandbox", sandbox_id)
                await self._destroy(sandbox_id)
            else:
                # Asked to be paused rather than lost: as after a machine restart, keep its files.
                log.warning("sandbox %s: its agent exited; keeping its files, paused", sandbox_id)
                await self.stop_booted(live)
                try:
                    self.commit(record, state="paused", pause_mode="filesystem", end_at=time.time())
                except STORAGE_ERRORS as exc:
                    # Recorded as running, it is found dead at the next start and kept paused then.
                    log.warning("sandbox %s: could not record it as paused (%s)", sandbox_id, exc)
                    record.state, record.pause_mode, record.end_at = "paused", "filesystem", time.time()
        if removed:
            self._locks.pop(sandbox_id, None)
        reap_children()

    async def _liveness_loop(self) -> None:
        # The pidfd reports an exit at once; this also catches a sandbox whose processes are gone
        # while its top process lingers.
        while True:
            await asyncio.sleep(LIVENESS_TICK)
            for sandbox_id, live in list(self.live.items()):
                record = self.records.get(sandbox_id)
                if record is None or record.state != "running" or live.watch_fd is None:
                    continue
                if not await self.workers.run(self.workers.monitor, live.container.alive):
                    self._on_exit(sandbox_id, live, live.container.top)

    def set_timeout(self, sandbox_id: str, timeout: int) -> None:
        """Reset the sandbox's deadline to now + `timeout`.

        A paused sandbox has no deadline: there it becomes the lifetime an automatic resume grants.
        """
        record = self.get(sandbox_id)
        check_timeout(timeout)
        if record.state == "paused":
            self.commit(record, timeout=timeout)
        else:
            self.commit(record, end_at=time.time() + timeout)

    def extend_timeout(self, sandbox_id: str, timeout: int) -> None:
        """Connect's rule: a running sandbox's end time only moves later."""
        record = self.get(sandbox_id)
        check_timeout(timeout)
        if record.state == "running":
            self.commit(record, end_at=max(record.end_at, time.time() + timeout))

    def is_running(self, sandbox_id: str) -> bool:
        """Whether the sandbox is registered as running and its processes are alive."""
        record = self.records.get(sandbox_id)
        live = self.live.get(sandbox_id)
        return record is not None and record.state == "running" and live is not None and live.container.alive()

    def is_paused(self, sandbox_id: str) -> bool:
        record = self.records.get(sandbox_id)
        return record is not None and record.state == "paused"

    async def upstream_for_request(self, sandbox_id: str) -> AgentUpstream | None:
        """The agent connections of a running sandbox, or None when it is not running.

        A paused sandbox whose lifecycle has auto-resume is resumed first, as E2B does on traffic.
        """
        record = self.records.get(sandbox_id)
        if record is not None and record.state == "paused" and (record.lifecycle or {}).get("autoResume"):
            try:
                await pausing.resume(self, sandbox_id, timeout=record.timeout, automatic=True)
            except Exception:
                log.exception("sandbox %s: automatic resume failed", sandbox_id)
                return None
        live = self.live.get(sandbox_id)
        if record is None or live is None or record.state != "running":
            return None
        return live.upstream

    def metrics(self, sandbox_id: str) -> MetricsSeries:
        self.get(sandbox_id)
        return self.live[sandbox_id].metrics

    # -- background ----------------------------------------------------------------------------------
    async def _expire_loop(self) -> None:
        # Each timeout is acted on in a task of its own: a slow kill or pause delays no other.
        while True:
            await asyncio.sleep(TIMEOUT_TICK)
            now = time.time()
            for record in list(self.records.values()):
                if record.state == "running" and record.end_at <= now and record.sandbox_id not in self._expiring:
                    self._expiring.add(record.sandbox_id)
                    task = asyncio.create_task(self._expire(record))
                    self._tasks.append(task)
                    task.add_done_callback(self._tasks.remove)
            reap_children()

    async def _expire(self, record: SandboxRecord) -> None:
        try:
            with contextlib.suppress(ApiError):
                await self.on_timeout(record)
        except Exception:
            log.exception("sandbox %s: acting on its timeout failed", record.sandbox_id)
        finally:
            self._expiring.discard(record.sandbox_id)

    async def on_timeout(self, record: SandboxRecord) -> None:
        """What happens when a sandbox's time is up: killed (E2B's default), or paused if its lifecycle says so."""
        if (record.lifecycle or {}).get("onTimeout") == "pause":
            log.info("sandbox %s timed out; pausing it", record.sandbox_id)
            await pausing.pause(self, record.sandbox_id, keep_memory=record.auto_pause_memory)
            return
        log.info("sandbox %s timed out", record.sandbox_id)
        await self.kill(record.sandbox_id)

    def _sample(self, record: SandboxRecord, live: Live) -> None:
        with contextlib.suppress(OSError, ValueError):
            live.metrics.sample(live.container.cgroup, live.container.disk, record.cpu_count, record.memory_mb)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            for sandbox_id, live in list(self.live.items()):
                record = self.records.get(sandbox_id)
                if record is not None and record.state == "running":
                    await self.workers.run(self.workers.monitor, self._sample, record, live)


def check_timeout(timeout: int) -> None:
    if timeout < 0 or timeout > MAX_TIMEOUT:
        raise ApiError(400, f"timeout must be between 0 and {MAX_TIMEOUT} seconds")


async def _agent_ready(container: Container) -> None:
    """Wait until the sandbox's agent answers a request.

    Its socket accepts connections as soon as the launcher has bound it, before the agent's own
    start (most of a boot's work) is done.
    """
    transport = httpx.AsyncHTTPTransport(uds=container.connect_path())
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox",
                                 timeout=AGENT_START_TIMEOUT) as client:
        try:
            (await client.get("/health")).raise_for_status()
        except httpx.HTTPError:
            raise container.start_failure() from None


def _agent_client(container: Container) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=container.connect_path())
    return httpx.AsyncClient(transport=transport, base_url="http://sandbox", timeout=None)

