"""Booting: a sandbox's disk, namespaces and agent, up to the agent's first answer.

A boot holds one of the few boot slots (see `scheduling`) until its agent answers. Boots run in
worker threads that cancellation cannot stop, so the booter counts them and keeps what they started
until a coroutine claims it: on shutdown it waits for them and discards what nobody claimed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from e2b_local.control.fleet.records import Booted, agent_client, new_id
from e2b_local.control.fleet.scheduling import Priority, Workers
from e2b_local.isolation.agent_bundle import AgentBundles
from e2b_local.isolation.cgroups import Limits
from e2b_local.isolation.container import AGENT_START_TIMEOUT, Container
from e2b_local.isolation.rootfs import RootfsStore
from e2b_local.protocol import EGRESS_CA_VARIABLE

# How long shutdown waits for sandboxes still booting, so it can discard them.
SHUTDOWN_BOOT_WAIT = 30.0
# The name of the sandbox's host as the workload sees it.
SANDBOX_HOSTNAME = "e2b-sandbox"


async def agent_ready(container: Container) -> None:
    """Wait until the sandbox's agent answers a request.

    Its socket accepts connections as soon as the launcher has bound it, before the agent's own
    start (most of a boot's work) is done.
    """
    async with agent_client(container, timeout=AGENT_START_TIMEOUT) as client:
        try:
            (await client.get("/health")).raise_for_status()
        except httpx.HTTPError:
            raise container.start_failure() from None


class Booter:
    """Starts sandboxes: fresh ones on a template, and again on a stopped sandbox's own files."""

    def __init__(self, container: Callable[[str], Container], key_prefix: str, rootfs: RootfsStore,
                 seccomp: Path, limits: Limits, disk_mb: int, workers: Workers, agent_start: str = "fork",
                 merge_pages: bool = False) -> None:
        self._container = container
        self.key_prefix = key_prefix
        self.rootfs = rootfs
        self.agents = AgentBundles(rootfs.directory)
        self.seccomp = seccomp
        self.limits = limits
        self.disk_mb = disk_mb
        self.workers = workers
        # "fork" or "exec": how agents start (see isolation/launcher.py).
        self.agent_start = agent_start
        # Whether forked agents and kernels let KSM merge sandboxes' identical pages (see isolation/merging.py).
        self.merge_pages = merge_pages
        self._lock = threading.Lock()
        self._in_flight = 0
        self._unclaimed: set[Container] = set()
        self._stopping = False
        # The egress authority's certificate (set by the server), which sandboxes add to their trust store.
        self.trusted_ca: str | None = None

    def launch(self, container: Container, layers: list[Path], internet: bool,
               limits: Limits | None = None, volumes: list[tuple[str, str]] | None = None,
               trust: bool = True) -> tuple[int, int]:
        """Start the namespaces and agent of a prepared container (its socket listens at once).

        `limits` are the sandbox's own (a custom template's); None gives the server's defaults.
        `trust`: whether the sandbox adds the egress authority to its trust store.
        """
        agent_env = {EGRESS_CA_VARIABLE: self.trusted_ca} if trust and self.trusted_ca else {}
        # A kernel zygote runs the template's Python as host root: only on layers built here, never on
        # a custom template's (whatever its builder put in them).
        built_here = all(layer.parent == self.rootfs.directory for layer in layers)
        info = container.launch(layers, limits or self.limits, self.seccomp, SANDBOX_HOSTNAME, internet,
                                base_layer=layers[-1], agent_package=self.agents.path(layers[-1]),
                                volumes=volumes, agent_env=agent_env, agent_start=self.agent_start,
                                fork_kernels=built_here, merge_pages=self.merge_pages)
        return info.pid, info.slirp_pid

    async def boot(self, template: str, internet: bool, layers: list[Path] | None = None,
                   files: Path | None = None, priority: Priority = Priority.REQUESTED,
                   limits: Limits | None = None, volumes: list[tuple[str, str]] | None = None,
                   trust: bool = True) -> Booted:
        """Start a new sandbox of `template`, on `files` (a saved upper layer) if given, with `volumes` mounted.

        It returns once the agent answers: a boot holds one of the few boot slots until then. A
        template build's sandbox passes `trust=False`: what it writes becomes a layer, which must not
        carry this server's authority.
        """
        layers = layers or await asyncio.to_thread(self.rootfs.layers, template)
        container = self._container(new_id(self.key_prefix))

        def boot() -> Booted:
            with self._lock:
                self._in_flight += 1
            try:
                container.prepare(self.disk_mb, upper_from=files)
                pid, slirp_pid = self.launch(container, layers, internet, limits, volumes, trust)
                if self._stopping:
                    raise RuntimeError("the server is shutting down")
                with self._lock:
                    self._unclaimed.add(container)
            except BaseException:
                container.destroy()
                raise
            finally:
                with self._lock:
                    self._in_flight -= 1
            return Booted(container, pid, slirp_pid, internet, layers)

        async with self.workers.boot_slots.hold(priority):
            booted = await self.workers.run(self.workers.boots, boot)
            try:
                await agent_ready(container)
            except BaseException:
                # On shutdown, shutdown() discards what nobody claimed; otherwise it goes now.
                if not self._stopping:
                    with self._lock:
                        self._unclaimed.discard(container)
                    self.workers.discard(container.destroy, f"sandbox {container.key}")
                raise
        with self._lock:
            self._unclaimed.discard(container)
        return booted

    async def reboot(self, container: Container, layers: list[Path], internet: bool,
                     limits: Limits | None = None, volumes: list[tuple[str, str]] | None = None) -> tuple[int, int]:
        """Kill whatever runs in `container` and boot a fresh agent on its own files; (pid, slirp pid)."""

        def boot() -> tuple[int, int]:
            container.stop()
            container.prepare_reboot()
            return self.launch(container, layers, internet, limits, volumes)

        async with self.workers.boot_slots.hold(Priority.REQUESTED):
            started = await self.workers.run(self.workers.boots, boot)
            await agent_ready(container)
        return started

    async def shutdown(self) -> None:
        """Refuse new boots, wait for those in threads, and discard what they started and nobody claimed.

        A sandbox left behind here would run with no server to kill it.
        """
        self._stopping = True
        deadline = time.monotonic() + SHUTDOWN_BOOT_WAIT
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with self._lock:
            unclaimed, self._unclaimed = list(self._unclaimed), set()
        for container in unclaimed:
            await asyncio.to_thread(container.destroy)
