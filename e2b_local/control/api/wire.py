"""Conversions between sandbox records and the JSON objects of E2B's REST API."""

from __future__ import annotations

import time
from typing import Any

from e2b_local.control.registry import PauseMode, SandboxRecord, SnapshotRecord
from e2b_local.protocol import ENVD_VERSION

# The `clientID` E2B reports for every sandbox.
CLIENT_ID = "local"


def iso(timestamp: float) -> str:
    """RFC 3339 in UTC with milliseconds, as E2B writes times."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"


def sandbox(record: SandboxRecord, domain: str | None = None) -> dict[str, Any]:
    """The `Sandbox` object answered by create and connect; `domain` is where its ports are served."""
    return {
        "sandboxID": record.sandbox_id,
        "templateID": record.template_id,
        "clientID": CLIENT_ID,
        "alias": record.alias,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": record.access_token,
        # E2B returns null unless public traffic is disallowed; here the code-interpreter port always
        # needs a token, and this is the only one the SDK sends to it.
        "trafficAccessToken": record.traffic_access_token,
        "domain": domain,
    }


def listed(record: SandboxRecord) -> dict[str, Any]:
    """The `ListedSandbox` object of list."""
    return {
        "sandboxID": record.sandbox_id,
        "templateID": record.template_id,
        "clientID": CLIENT_ID,
        "alias": record.alias,
        "startedAt": iso(record.started_at),
        "endAt": iso(record.end_at),
        "cpuCount": record.cpu_count,
        "memoryMB": record.memory_mb,
        "diskSizeMB": record.disk_size_mb,
        "state": record.state.value,
        "envdVersion": ENVD_VERSION,
        "metadata": record.metadata,
        "volumeMounts": [{"name": m["name"], "path": m["path"]} for m in record.volume_mounts],
    }


def detail(record: SandboxRecord, domain: str | None = None) -> dict[str, Any]:
    """The `SandboxDetail` object of get_info."""
    out = listed(record)
    out.update(
        envdAccessToken=record.access_token,
        allowInternetAccess=record.allow_internet_access,
        domain=domain,
    )
    if record.network is not None:
        out["network"] = record.network
    if record.lifecycle is not None:
        out["lifecycle"] = record.lifecycle.to_wire()
    if record.pause_mode is not None:
        out["pauseMode"] = record.pause_mode.value
    if record.paused and record.pause_mode is PauseMode.FULL:
        out["envdUnresponsiveAtPause"] = record.envd_unresponsive_at_pause
    return out


def snapshot(record: SnapshotRecord) -> dict[str, Any]:
    """The `SnapshotInfo` object of create_snapshot and list_snapshots."""
    return {"snapshotID": record.snapshot_id, "names": record.names}
