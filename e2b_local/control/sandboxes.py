"""Sandbox lifecycles: create (from a warm pool when possible), find, time out, and kill.

The manager owns the registry, the containers and a client per sandbox agent. Blocking work
(launching namespaces, waiting for an agent, deleting directories) runs in worker threads so that
the event loop keeps serving every other sandbox meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from e2b_local.config import Paths
from e2b_local.control.errors import ApiError, not_found
from e2b_local.control.metrics import SAMPLE_INTERVAL, MetricsSeries
from e2b_local.control.registry import Registry, SandboxRecord
from e2b_local.isolation.cgroups import Limits
from e2b_local.isolation.container import Container, reap_children
from e2b_local.isolation.rootfs import TEMPLATES, RootfsStore
from e2b_local.isolation.seccomp import compiled_filter

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
# How often expiry is checked.
TIMEOUT_TICK = 0.25
# The envd version we report: new enough that the SDK enables every feature (see the protocol notes).
ENVD_VERSION = "0.6.7"
CLIENT_ID = "local"


def new_id(prefix: str = "") -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def default_limits() -> Limits:
    return Limits(memory_mb=DEFAULT_MEMORY_MB, cpu_count=DEFAULT_CPU_COUNT, max_pids=DEFAULT_MAX_PIDS)


def normalize_template(template: str) -> str:
    """Accept `name`, `name:tag` and `namespace/name` for the built-in templates."""
    name = template.split("/")[-1].split(":")[0]
    if name not in TEMPLATES:
        raise ApiError(404, f"template '{template}' not found")
    return name


@dataclass
class Booted:
    """A sandbox whose agent is running, not yet (or no longer) assigned to a record."""

    container: Container
    pid: int
    slirp_pid: int
    internet: bool


@dataclass
class Live:
    """Runtime state of a registered sandbox that is not persisted."""

    container: Container
    client: httpx.AsyncClient
    metrics: MetricsSeries = field(default_factory=MetricsSeries)


class SandboxManager:
    """Creates, tracks and destroys sandboxes."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        paths.sandboxes.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(paths.registry)
        self.rootfs = RootfsStore(paths.rootfs)
        self.seccomp = compiled_filter(paths.home / "seccomp.bpf")
        # Every sandbox directory and cgroup of this server starts with this, so that several servers on
        # one machine (say, test runs) can tell their sandboxes from each other's.
        self.key_prefix = "k" + hashlib.sha256(str(paths.home).encode()).hexdigest()[:6] + "-"
        self.records: dict[str, SandboxRecord] = {}
        self.live: dict[str, Live] = {}
        self.pool: dict[str, list[Booted]] = {t: [] for t in TEMPLATES}
        self._pool_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._locks: dict[str, asyncio.Lock] = {}

    # -- startup and shutdown ----------------------------------------------------------------------
    async def start(self) -> None:
        """Adopt the sandboxes that survived a restart, clean up the rest, start background work."""
        await asyncio.to_thread(self.rootfs.ensure_base)
        known = set()
        for record in self.registry.all():
            container = Container(self.paths.sandboxes, record.key)
            if record.state == "running" and not container.alive():
                log.info("sandbox %s did not survive; removing it", record.sandbox_id)
                self.registry.delete(record.sandbox_id)
                await asyncio.to_thread(container.destroy)
                continue
            known.add(record.key)
            self.records[record.sandbox_id] = record
            self.live[record.sandbox_id] = Live(container, _agent_client(container))
        for leftover in self.paths.sandboxes.iterdir():
            if leftover.name not in known:
                await asyncio.to_thread(Container(self.paths.sandboxes, leftover.name).destroy)
        self._tasks = [asyncio.create_task(self._expire_loop()), asyncio.create_task(self._metrics_loop())]
        for template in TEMPLATES:
            self._refill(template)

    async def stop(self) -> None:
        """Stop background work; sandboxes keep running (pool sandboxes are discarded)."""
        for task in [*self._tasks, *self._pool_tasks.values()]:
            task.cancel()
        for booted_list in self.pool.values():
            for booted in booted_list:
                await asyncio.to_thread(booted.container.destroy)
            booted_list.clear()
        for live in self.live.values():
            await live.client.aclose()
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
                booted = await self._boot(template, internet=True)
            except Exception:
                log.exception("could not pre-start a %s sandbox", template)
                return
            self.pool[template].append(booted)

    async def _boot(self, template: str, internet: bool) -> Booted:
        layers = await asyncio.to_thread(self.rootfs.layers, template)
        container = Container(self.paths.sandboxes, new_id(self.key_prefix))

        def boot() -> Booted:
            container.prepare()
            try:
                info = container.launch(layers, default_limits(), self.seccomp, "e2b-sandbox", internet,
                                        base_layer=layers[-1])
                container.wait_for_agent()
            except BaseException:
                container.destroy()
                raise
            return Booted(container, info.pid, info.slirp_pid, internet)

        return await asyncio.to_thread(boot)

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
    async def create(self, template: str, timeout: int | None, metadata: dict[str, str], env_vars: dict[str, str],
                     allow_internet_access: bool | None, network: dict[str, Any] | None,
                     lifecycle: dict[str, Any] | None) -> SandboxRecord:
        name = normalize_template(template)
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if timeout < 0 or timeout > MAX_TIMEOUT:
            raise ApiError(400, f"timeout must be between 0 and {MAX_TIMEOUT} seconds")
        internet = allow_internet_access is not False
        booted = await self._take(name, internet)
        now = time.time()
        limits = default_limits()
        record = SandboxRecord(
            sandbox_id=new_id(), template_id=name, key=booted.container.key, access_token=secrets.token_hex(16),
            started_at=now, end_at=now + timeout, alias=name, metadata=dict(metadata), env_vars=dict(env_vars),
            cpu_count=limits.cpu_count, memory_mb=limits.memory_mb, disk_size_mb=DEFAULT_DISK_MB,
            allow_internet_access=internet, network=network, lifecycle=lifecycle, pid=booted.pid,
            slirp_pid=booted.slirp_pid,
        )
        client = _agent_client(booted.container)
        try:
            await self._init_agent(record, client)
        except Exception:
            await client.aclose()
            await asyncio.to_thread(booted.container.destroy)
            raise
        self.registry.put(record)
        self.records[record.sandbox_id] = record
        live = self.live[record.sandbox_id] = Live(booted.container, client)
        self._sample(record, live)  # so that metrics have a first reading at once
        return record

    async def _init_agent(self, record: SandboxRecord, client: httpx.AsyncClient) -> None:
        response = await client.post("/init", json={
            "envVars": record.env_vars, "accessToken": record.access_token, "sandboxId": record.sandbox_id,
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
            record = self.records.pop(sandbox_id, None)
            if record is None:
                raise not_found(sandbox_id)
            self.registry.delete(sandbox_id)
            live = self.live.pop(sandbox_id, None)
            if live is not None:
                await live.client.aclose()
            container = live.container if live else Container(self.paths.sandboxes, record.key)
            await asyncio.to_thread(container.destroy)
        self._locks.pop(sandbox_id, None)
        reap_children()

    def set_timeout(self, sandbox_id: str, timeout: int) -> None:
        record = self.get(sandbox_id)
        if timeout < 0 or timeout > MAX_TIMEOUT:
            raise ApiError(400, f"timeout must be between 0 and {MAX_TIMEOUT} seconds")
        record.end_at = time.time() + timeout
        self.registry.put(record)

    def extend_timeout(self, sandbox_id: str, timeout: int) -> None:
        """Connect's rule: a running sandbox's end time only moves later."""
        record = self.get(sandbox_id)
        record.end_at = max(record.end_at, time.time() + timeout)
        self.registry.put(record)

    async def client_for_request(self, sandbox_id: str) -> httpx.AsyncClient | None:
        """The agent client of a running sandbox, or None when it is not running."""
        record = self.records.get(sandbox_id)
        live = self.live.get(sandbox_id)
        if record is None or live is None or record.state != "running":
            return None
        return live.client

    def metrics(self, sandbox_id: str) -> MetricsSeries:
        self.get(sandbox_id)
        return self.live[sandbox_id].metrics

    # -- background ----------------------------------------------------------------------------------
    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(TIMEOUT_TICK)
            now = time.time()
            for record in list(self.records.values()):
                if record.state == "running" and record.end_at <= now:
                    with contextlib.suppress(ApiError):
                        await self.on_timeout(record)
            reap_children()

    async def on_timeout(self, record: SandboxRecord) -> None:
        """What happens when a sandbox's time is up (E2B's default: it is killed)."""
        log.info("sandbox %s timed out", record.sandbox_id)
        await self.kill(record.sandbox_id)

    def _sample(self, record: SandboxRecord, live: Live) -> None:
        with contextlib.suppress(OSError, ValueError):
            live.metrics.sample(live.container.cgroup, live.container.upper, record.cpu_count, record.memory_mb,
                                record.disk_size_mb)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            for sandbox_id, live in list(self.live.items()):
                record = self.records.get(sandbox_id)
                if record is not None and record.state == "running":
                    await asyncio.to_thread(self._sample, record, live)


def _agent_client(container: Container) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=container.connect_path())
    return httpx.AsyncClient(transport=transport, base_url="http://sandbox", timeout=None)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
