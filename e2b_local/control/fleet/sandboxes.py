"""The fleet of registered sandboxes: start one, find it, adopt it after a restart, notice it die, kill it.

The fleet owns the registry, the containers and a client per sandbox agent. Blocking work
(launching namespaces, waiting for an agent, deleting directories) runs in worker threads so that
the event loop keeps serving every other sandbox meanwhile; `scheduling` keeps boots, teardowns and
metrics in separate threads so that none waits for another. Booting is `boot.py`'s, the warm pool
`pool.py`'s; pausing, resuming and timeouts build on the primitives here (`control/lifecycle.py`).
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
import time
from pathlib import Path
from typing import Any

from e2b_local.control.errors import ApiError, not_found
from e2b_local.control.fleet import network
from e2b_local.control.fleet.boot import Booter
from e2b_local.control.fleet.metrics import SAMPLE_INTERVAL, MetricsSeries
from e2b_local.control.fleet.pool import PoolSpec, WarmPool
from e2b_local.control.fleet.records import Live, Source, SpawnOptions, new_id, volume_binds
from e2b_local.control.fleet.scheduling import Workers
from e2b_local.control.registry import (
    DEFAULT_USER,
    DEFAULT_WORKDIR,
    PauseMode,
    Registry,
    SandboxRecord,
    SandboxState,
)
from e2b_local.control.services import events
from e2b_local.control.services.events import Events
from e2b_local.control.services.sandbox_logs import SandboxLogs
from e2b_local.isolation import idranges, merging
from e2b_local.isolation.cgroups import Limits
from e2b_local.isolation.container import Container
from e2b_local.isolation.reaping import reap_children
from e2b_local.isolation.rootfs import RootfsStore
from e2b_local.isolation.seccomp import compiled_filter
from e2b_local.isolation.tracking import TrackedProcess
from e2b_local.settings import Settings

log = logging.getLogger("e2b_local")

# E2B's default sandbox lifetime when create does not name one.
DEFAULT_TIMEOUT = 300
# E2B's upper bound for a sandbox's continuous runtime (Pro plan): 24 hours.
MAX_TIMEOUT = 24 * 3600
# How often every running sandbox's processes are checked, besides the pidfd that reports its exit.
LIVENESS_TICK = 2.0
# What a failed write to the registry raises.
STORAGE_ERRORS = (sqlite3.Error, OSError)


def check_timeout(timeout: int) -> None:
    if timeout < 0 or timeout > MAX_TIMEOUT:
        raise ApiError(400, f"timeout must be between 0 and {MAX_TIMEOUT} seconds")


class Fleet:
    """Creates, tracks and destroys sandboxes."""

    def __init__(self, settings: Settings) -> None:
        self.paths = paths = settings.paths
        paths.sandboxes.mkdir(parents=True, exist_ok=True)
        # Before the registry: a data directory that has one already predates per-server ranges.
        self.id_base = idranges.server_range(paths.home)
        self.registry = Registry(paths.registry)
        # What happens to sandboxes, for their logs, the events API and webhooks.
        self.logs = SandboxLogs(self.registry)
        self.events = Events(self.registry, self.logs)
        self.rootfs = RootfsStore(paths.rootfs)
        self.limits = Limits(memory_mb=settings.memory_mb, cpu_count=settings.cpu_count, max_pids=settings.max_pids)
        self.disk_mb = settings.disk_mb
        # The `domain` of every sandbox answered to the SDK (its get_host): domain mode's, when it is on.
        self.domain = settings.sdk_domain if settings.https_port else None
        # Every sandbox directory and cgroup of this server starts with this, so that several servers on
        # one machine (say, test runs) can tell their sandboxes from each other's.
        key_prefix = "k" + hashlib.sha256(str(paths.home).encode()).hexdigest()[:6] + "-"
        self.records: dict[str, SandboxRecord] = {}
        self.live: dict[str, Live] = {}
        self.workers = Workers(settings.boot_concurrency)
        self.booter = Booter(self.container, key_prefix, self.rootfs, compiled_filter(paths.home / "seccomp.bpf"),
                             self.limits, self.disk_mb, self.workers, settings.agent_start, settings.merge_pages)
        self.pool = WarmPool(self.booter, settings.pool_size, settings.template_pool, settings.pool_max)
        self._tasks: list[asyncio.Task[None]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        # The egress proxy's port on the host's loopback (set by the server before start; 0: none).
        self.egress_port = 0

    def container(self, key: str) -> Container:
        """The container of sandbox directory `key`."""
        return Container(self.paths.sandboxes, key, id_base=self.id_base)

    # -- startup and shutdown ----------------------------------------------------------------------
    async def start(self) -> None:
        """Adopt the sandboxes that survived a restart, clean up the rest, start background work."""
        await asyncio.to_thread(self.rootfs.ensure_base)
        if self.booter.merge_pages:
            self.booter.merge_pages = await asyncio.to_thread(merging.turn_on)
        # Before any sandbox can send a packet: the host-side rules that keep every sandbox off the host.
        await network.prepare_host()
        self.events.prune()
        self.logs.prune()
        known = set()
        for record in self.registry.all():
            container = self.container(record.key)
            if not container.directory.is_dir():
                # Destroyed by a kill that could not delete the record (its disk was full): gone for good.
                log.info("sandbox %s was destroyed; removing its record", record.sandbox_id)
                self._forget(record.sandbox_id)
                continue
            # By the recorded pid only if that process is still in the sandbox's cgroup: it may
            # have been reused by an unrelated process since the sandbox died.
            alive = await asyncio.to_thread(container.adopt, record.pid)
            if record.running and not alive:
                if not record.pauses_on_loss:
                    log.info("sandbox %s did not survive; removing it", record.sandbox_id)
                    await asyncio.to_thread(container.destroy)
                    self._forget(record.sandbox_id)
                    self.events.emit(events.KILLED, record)
                    continue
                # Asked to be paused rather than lost: keep its files, resume will boot on them.
                log.info("sandbox %s did not survive (machine restarted?); keeping its files, paused",
                         record.sandbox_id)
                await asyncio.to_thread(container.stop)  # helpers left behind (slirp4netns, say)
                # Unrecorded, it is found dead again at the next start and kept paused then.
                with contextlib.suppress(*STORAGE_ERRORS):
                    self.commit(record, state=SandboxState.PAUSED, pause_mode=PauseMode.FILESYSTEM,
                                end_at=time.time())
            elif alive:
                # A crash may have come between a freeze and its thaw (a snapshot's copy, say): running
                # sandboxes run, paused ones stay frozen, whatever happened meanwhile.
                await asyncio.to_thread(container.freeze if record.paused else container.thaw)
            else:
                await asyncio.to_thread(container.stop)  # helpers left behind (slirp4netns, say)
            if alive and record.running and record.network and (record.network.get("rules")
                                                                or record.network.get("egressProxy")):
                # Its steering names the previous server's proxy port.
                await network.enforce(container, await network.egress_policy(
                    record.network, record.allow_internet_access, self.egress_port), replacing=True)
            known.add(record.key)
            self.records[record.sandbox_id] = record
            live = self.live[record.sandbox_id] = Live.connect(container)
            self._watch(record.sandbox_id, live)
        for leftover in self.paths.sandboxes.iterdir():
            if leftover.name not in known:
                await asyncio.to_thread(self.container(leftover.name).destroy)

    def run_background(self) -> None:
        """Start sampling metrics, checking liveness and filling the warm pool."""
        self._tasks += [asyncio.create_task(self._metrics_loop()), asyncio.create_task(self._liveness_loop())]
        self.pool.refill_all()

    async def stop(self) -> None:
        """Stop background work; sandboxes keep running (pool sandboxes are discarded)."""
        for task in self._tasks:
            task.cancel()
        self.pool.cancel()
        await self.booter.shutdown()
        await self.pool.discard()
        for live in self.live.values():
            self._unwatch(live)
            await live.aclose()
        self.workers.shutdown()
        self.registry.close()

    # -- operations ----------------------------------------------------------------------------------
    async def spawn(self, source: Source, options: SpawnOptions) -> SandboxRecord:
        """Start and register a new sandbox from `source`."""
        timeout = DEFAULT_TIMEOUT if options.timeout is None else options.timeout
        check_timeout(timeout)
        allowed = options.allow_internet_access is not False
        policy = await network.egress_policy(options.network, allowed, self.egress_port)
        internet = not policy.denies_everything
        # Pool sandboxes have internet access and no volumes or saved files: others boot as they need.
        poolable = source.files is None and not options.volume_mounts
        if poolable and source.layers is None:
            booted = await self.pool.take(source.base_template, internet)
        elif poolable and internet and source.pool_owner is not None and source.layers is not None:
            booted = await self.pool.take_custom(PoolSpec(source.pool_owner, source.base_template,
                                                          tuple(source.layers), source.limits))
        else:
            booted = await self.booter.boot(source.base_template, internet, source.layers, source.files,
                                            limits=source.limits, volumes=volume_binds(options.volume_mounts))
        limits = source.limits or self.limits
        now = time.time()
        record = SandboxRecord(
            sandbox_id=new_id(), template_id=source.template_id, key=booted.container.key,
            access_token=secrets.token_hex(16), started_at=now, end_at=now + timeout, alias=source.alias,
            metadata=dict(options.metadata), env_vars={**source.env_vars, **options.env_vars},
            cpu_count=limits.cpu_count, memory_mb=limits.memory_mb, disk_size_mb=self.disk_mb,
            allow_internet_access=allowed, network=options.network, lifecycle=options.lifecycle, pid=booted.pid,
            slirp_pid=booted.slirp_pid, layers=[str(p) for p in booted.layers], base_template=source.base_template,
            timeout=timeout, auto_pause_memory=options.auto_pause_memory,
            volume_mounts=[dict(m) for m in options.volume_mounts],
            default_user=source.default_user or DEFAULT_USER, default_workdir=source.default_workdir or DEFAULT_WORKDIR,
        )
        live = Live.connect(booted.container)
        try:
            await network.enforce(booted.container, policy)
            await self._init_agent(record, live)
            if source.after_boot is not None:
                await source.after_boot(live.client)
            # Unrecorded, the sandbox would outlive a restart unknown: it exists once its record does.
            self.registry.put(record)
        except BaseException:
            await live.aclose()
            await asyncio.to_thread(booted.container.destroy)
            raise
        self.records[record.sandbox_id] = record
        self.live[record.sandbox_id] = live
        self._watch(record.sandbox_id, live)
        self.events.emit(events.CREATED, record)
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
        policy = await network.egress_policy(record.network, record.allow_internet_access, self.egress_port)
        internet = not policy.denies_everything
        try:
            # With the CPU and memory it was created with (a custom template's own).
            limits = dataclasses.replace(self.limits, cpu_count=record.cpu_count, memory_mb=record.memory_mb)
            pid, slirp_pid = await self.booter.reboot(container, layers, internet, limits,
                                                      volume_binds(record.volume_mounts))
            live.reconnect()
            self._watch(record.sandbox_id, live)
            await network.enforce(container, policy)
            await self._init_agent(record, live)
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

    async def update_network(self, sandbox_id: str, settings: dict[str, Any] | None,
                             allow_internet_access: bool) -> None:
        """Replace a running sandbox's outbound rules (E2B's update has replace semantics)."""
        policy = await network.egress_policy(settings, allow_internet_access, self.egress_port)
        async with self.lock(sandbox_id):
            record = self.get(sandbox_id)
            if not record.running:
                raise ApiError(409, f"sandbox '{sandbox_id}' is paused; resume it before changing its network")
            internet = not policy.denies_everything
            container = self.live[sandbox_id].container
            await network.enforce(container, policy, replacing=True)
            if internet and not record.slirp_pid:
                # Created without any way out: give it its user-mode network stack now, rules first.
                slirp_pid = await asyncio.to_thread(network.attach_stack, container, record.pid)
                try:
                    self.commit(record, slirp_pid=slirp_pid)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.kill(slirp_pid, signal.SIGKILL)
                    raise
            self.commit(record, network=settings, allow_internet_access=allow_internet_access)
        self.events.emit(events.UPDATED, record, {"network_updated": True})

    async def _init_agent(self, record: SandboxRecord, live: Live) -> None:
        response = await live.client.post("/init", json={
            "envVars": record.env_vars, "sandboxId": record.sandbox_id,
            "templateId": record.template_id, "defaultUser": record.default_user,
            "defaultWorkdir": record.default_workdir,
            "hostname": "e2b-" + record.sandbox_id[:8],
        })
        response.raise_for_status()

    def get(self, sandbox_id: str) -> SandboxRecord:
        """The record of a registered sandbox (404 when there is none)."""
        record = self.records.get(sandbox_id)
        if record is None:
            raise not_found(sandbox_id)
        return record

    def by_owner(self, owner: int) -> SandboxRecord | None:
        """The running sandbox whose owner uid is `owner`."""
        for sandbox_id, live in self.live.items():
            record = self.records.get(sandbox_id)
            if record is not None and record.running and live.container.owner() == owner:
                return record
        return None

    def list(self) -> list[SandboxRecord]:
        return list(self.records.values())

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        """The lock every change of one sandbox's state is made under."""
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    async def kill(self, sandbox_id: str) -> None:
        """Destroy the sandbox: every process, mount, cgroup, network stack and file."""
        async with self.lock(sandbox_id):
            await self._destroy(sandbox_id)
        self._locks.pop(sandbox_id, None)
        reap_children()
        log.info("sandbox %s killed", sandbox_id)

    async def _destroy(self, sandbox_id: str) -> None:
        # Under the sandbox's lock. The sandbox goes first and its record after, so that a record
        # that cannot be deleted (a full disk) names a sandbox whose directory is gone: the next
        # start drops such records.
        record = self.records.pop(sandbox_id, None)
        if record is None:
            raise not_found(sandbox_id)
        live = self.live.pop(sandbox_id, None)
        if live is not None and record.running:
            await self.logs.collect(sandbox_id, live.client)
        try:
            if live is not None:
                self._unwatch(live)
                await live.aclose()
            container = live.container if live else self.container(record.key)
            await self.workers.run(self.workers.teardown, container.destroy)
        finally:
            self._forget(sandbox_id)
            self.events.emit(events.KILLED, record)

    def _forget(self, sandbox_id: str) -> None:
        """Delete a destroyed sandbox's record; when the disk is full, the next start does."""
        try:
            self.registry.delete(sandbox_id)
        except STORAGE_ERRORS as exc:
            log.warning("sandbox %s is destroyed but its record could not be deleted (%s); "
                        "it is removed at the next start", sandbox_id, exc)

    def reap(self) -> None:
        """Collect the exit status of any of the server's children that ended."""
        reap_children()

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
            if not record.running:
                return
            removed = not record.pauses_on_loss
            if removed:
                log.warning("sandbox %s: its agent exited; removing the sandbox", sandbox_id)
                self.logs.add(sandbox_id, "error", "Sandbox agent exited; removing the sandbox")
                await self._destroy(sandbox_id)
            else:
                # Asked to be paused rather than lost: as after a machine restart, keep its files.
                log.warning("sandbox %s: its agent exited; keeping its files, paused", sandbox_id)
                self.logs.add(sandbox_id, "error", "Sandbox agent exited; keeping its files, paused")
                await self.stop_booted(live)
                try:
                    self.commit(record, state=SandboxState.PAUSED, pause_mode=PauseMode.FILESYSTEM,
                                end_at=time.time())
                except STORAGE_ERRORS as exc:
                    # Recorded as running, it is found dead at the next start and kept paused then.
                    log.warning("sandbox %s: could not record it as paused (%s)", sandbox_id, exc)
                    record.state, record.pause_mode, record.end_at = (SandboxState.PAUSED, PauseMode.FILESYSTEM,
                                                                      time.time())
                self.events.emit(events.PAUSED, record)
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
                if record is None or not record.running or live.watch_fd is None:
                    continue
                if not await self.workers.run(self.workers.monitor, live.container.alive):
                    self._on_exit(sandbox_id, live, live.container.top)

    def is_running(self, sandbox_id: str) -> bool:
        """Whether the sandbox is registered as running and its processes are alive."""
        record = self.records.get(sandbox_id)
        live = self.live.get(sandbox_id)
        return record is not None and record.running and live is not None and live.container.alive()

    def is_paused(self, sandbox_id: str) -> bool:
        record = self.records.get(sandbox_id)
        return record is not None and record.paused

    # -- metrics -------------------------------------------------------------------------------------
    def metrics(self, sandbox_id: str) -> MetricsSeries:
        """The resource samples of a registered sandbox."""
        self.get(sandbox_id)
        return self.live[sandbox_id].metrics

    def _sample(self, record: SandboxRecord, live: Live) -> None:
        with contextlib.suppress(OSError, ValueError):
            live.metrics.sample(live.container.cgroup, live.container.disk, record.cpu_count, record.memory_mb)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            for sandbox_id, live in list(self.live.items()):
                record = self.records.get(sandbox_id)
                if record is not None and record.running:
                    await self.workers.run(self.workers.monitor, self._sample, record, live)
