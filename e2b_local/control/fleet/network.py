"""A sandbox's way out: its outbound rules in the host's firewall, and a network stack added later."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from e2b_local.control.errors import ApiError
from e2b_local.control.fleet import egress
from e2b_local.isolation import firewall, network
from e2b_local.isolation.container import Container
from e2b_local.isolation.firewall import EgressPolicy

log = logging.getLogger("e2b_local")


async def egress_policy(settings: dict[str, Any] | None, allow_internet_access: bool,
                        proxy_port: int = 0) -> EgressPolicy:
    """The outbound rules of these settings (domain names are looked up in a worker thread)."""
    if not settings or not settings.get("allowOut"):
        return egress.policy(settings, allow_internet_access, proxy_port)  # no names to look up: no thread hop
    egress.check(settings)
    return await asyncio.to_thread(egress.policy, settings, allow_internet_access, proxy_port)


async def enforce(container: Container, policy: EgressPolicy, replacing: bool = False) -> None:
    """Install the sandbox's outbound rules in the host's firewall."""
    if not policy.restricts and not policy.steers and not replacing:
        return  # a fresh owner has no rules to remove
    try:
        await asyncio.to_thread(firewall.apply, container.owner(), policy)
    except RuntimeError as exc:
        raise ApiError(500, str(exc)) from None


def attach_stack(container: Container, pid: int) -> int:
    """Give a running sandbox created without a way out its user-mode network stack; its pid.

    Blocking. The stack joins the sandbox's cgroup, to be frozen, killed and accounted with it.
    """

    def still_ours() -> bool:
        top = container.top
        return top is not None and top.pid == pid and top.alive()

    slirp_pid = network.attach_slirp4netns(pid, container.owner(), str(container.directory / "slirp4netns.log"),
                                           verify=still_ours)
    container.cgroup.add(slirp_pid)
    return slirp_pid


async def prepare_host() -> None:
    """The host-side rules that keep every sandbox off the host, and a usable tun device."""
    await asyncio.to_thread(firewall.install)
    if network.slirp4netns_path() is not None and await asyncio.to_thread(network.ensure_tun_device):
        log.info("made %s usable by unprivileged programs (mode 0666, as udev sets it)", network.TUN_DEVICE)
