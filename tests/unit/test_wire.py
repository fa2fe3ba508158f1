"""Sandbox and snapshot records as E2B's REST objects, read back with the SDK's own models."""

from __future__ import annotations

import datetime

from e2b.api.client.models.listed_sandbox import ListedSandbox
from e2b.api.client.models.sandbox import Sandbox as SandboxModel
from e2b.api.client.models.sandbox_detail import SandboxDetail
from e2b.api.client.models.snapshot_info import SnapshotInfo

from e2b_local.control.api import wire
from e2b_local.control.registry import SandboxRecord, SnapshotRecord
from e2b_local.protocol import ENVD_VERSION

# 2026-01-02T03:04:05.250Z (a fraction floats hold exactly)
STARTED = datetime.datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=datetime.UTC).timestamp()


def _record(**changes: object) -> SandboxRecord:
    fields: dict[str, object] = {
        "sandbox_id": "abcdefghij0123456789", "template_id": "base", "key": "k1-x", "access_token": "tok",
        "started_at": STARTED, "end_at": STARTED + 300, "alias": "base", "metadata": {"team": "a"},
        "traffic_access_token": "traffic",
    }
    fields.update(changes)
    return SandboxRecord(**fields)  # type: ignore[arg-type]


def test_iso_is_rfc3339_utc_with_milliseconds() -> None:
    assert wire.iso(STARTED) == "2026-01-02T03:04:05.250Z"
    assert wire.iso(0) == "1970-01-01T00:00:00.000Z"
    assert wire.iso(STARTED + 0.0009) == "2026-01-02T03:04:05.250Z"  # truncated to the millisecond


def test_create_answer_parses_as_the_sdk_sandbox() -> None:
    body = wire.sandbox(_record())
    parsed = SandboxModel.from_dict(body)
    assert parsed.sandbox_id == "abcdefghij0123456789"
    assert parsed.template_id == "base"
    assert parsed.envd_version == ENVD_VERSION
    assert parsed.envd_access_token == "tok"
    assert parsed.traffic_access_token == "traffic"
    assert parsed.domain is None
    assert parsed.additional_properties == {}


def test_listed_sandbox_parses_with_times_and_state() -> None:
    parsed = ListedSandbox.from_dict(wire.listed(_record()))
    assert parsed.started_at == datetime.datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=datetime.UTC)
    assert (parsed.end_at - parsed.started_at).total_seconds() == 300
    assert parsed.state.value == "running"
    assert parsed.metadata == {"team": "a"}
    assert (parsed.cpu_count, parsed.memory_mb) == (2, 1024)
    assert parsed.additional_properties == {}


def test_detail_of_a_running_sandbox_has_no_pause_fields() -> None:
    body = wire.detail(_record())
    assert "pauseMode" not in body and "envdUnresponsiveAtPause" not in body
    assert "network" not in body and "lifecycle" not in body
    parsed = SandboxDetail.from_dict(body)
    assert parsed.allow_internet_access is True
    assert parsed.envd_access_token == "tok"


def test_detail_of_a_fully_paused_sandbox_reports_the_agent_state() -> None:
    record = _record(state="paused", pause_mode="full", envd_unresponsive_at_pause=True,
                     lifecycle={"onTimeout": "pause", "autoResume": True},
                     network={"denyOut": ["0.0.0.0/0"]}, allow_internet_access=False)
    body = wire.detail(record)
    assert body["pauseMode"] == "full"
    assert body["envdUnresponsiveAtPause"] is True
    parsed = SandboxDetail.from_dict(body)
    assert parsed.state.value == "paused"
    assert parsed.lifecycle.on_timeout.value == "pause"
    assert parsed.lifecycle.auto_resume is True
    assert parsed.network.deny_out == ["0.0.0.0/0"]
    assert parsed.allow_internet_access is False


def test_filesystem_pause_does_not_report_agent_state() -> None:
    body = wire.detail(_record(state="paused", pause_mode="filesystem", envd_unresponsive_at_pause=True))
    assert body["pauseMode"] == "filesystem"
    assert "envdUnresponsiveAtPause" not in body


def _snapshot(name: str | None, tag: str = "default") -> SnapshotRecord:
    return SnapshotRecord(build_id="b1", template_id="snap0123", tag=tag, sandbox_id="s", base_template="base",
                          layers=[], created_at=STARTED, name=name)


def test_snapshot_ids_follow_e2b() -> None:
    unnamed = SnapshotInfo.from_dict(wire.snapshot(_snapshot(None)))
    assert (unnamed.snapshot_id, unnamed.names) == ("snap0123:default", [])
    named = SnapshotInfo.from_dict(wire.snapshot(_snapshot("my-app", "v2")))
    assert (named.snapshot_id, named.names) == ("local/my-app:v2", ["local/my-app:v2"])
