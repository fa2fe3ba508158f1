"""The control plane through the real SDK: create, list, info, timeouts, connect, kill, metrics, errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from e2b import (
    AsyncSandbox,
    AuthenticationException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)


def test_create_info_and_kill(e2b_server) -> None:
    sandbox = Sandbox.create(metadata={"purpose": "info"}, timeout=120)
    try:
        info = sandbox.get_info()
        assert info.sandbox_id == sandbox.sandbox_id
        assert info.template_id == "base"
        assert info.metadata == {"purpose": "info"}
        assert info.state == SandboxState.RUNNING
        assert info.cpu_count >= 1 and info.memory_mb > 0
        assert 110 <= (info.end_at - info.started_at).total_seconds() <= 121
        assert sandbox.is_running()
        assert Sandbox.get_info(sandbox.sandbox_id).sandbox_id == sandbox.sandbox_id
    finally:
        assert sandbox.kill() is True
    assert sandbox.kill() is False
    assert Sandbox.kill(sandbox.sandbox_id) is False
    assert not sandbox.is_running()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sandbox.sandbox_id)


def test_unknown_sandbox(e2b_server) -> None:
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("doesnotexist000000000")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.set_timeout("doesnotexist000000000", 30)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_metrics("doesnotexist000000000")


def test_unknown_template_is_not_found(e2b_server) -> None:
    with pytest.raises(SandboxException) as info:
        Sandbox.create(template="no-such-template")
    assert info.value.status_code == 404
    assert "no-such-template" in str(info.value)


def test_wrong_api_key(e2b_server) -> None:
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_" + "0" * 40)
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="e2b_" + "1" * 40).next_items()


def test_timeout_kills_the_sandbox(e2b_server) -> None:
    sandbox = Sandbox.create(timeout=1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sandbox.is_running():
        time.sleep(0.2)
    with pytest.raises(SandboxNotFoundException):
        sandbox.get_info()


def test_set_timeout_and_connect_extend(e2b_server) -> None:
    with Sandbox.create(timeout=60) as sandbox:
        sandbox.set_timeout(600)
        end = sandbox.get_info().end_at
        assert 590 <= (end - datetime.now(UTC)).total_seconds() <= 601
        sandbox.set_timeout(30)  # set_timeout may shorten the lifetime
        assert (sandbox.get_info().end_at - datetime.now(UTC)).total_seconds() <= 31
        same = Sandbox.connect(sandbox.sandbox_id, timeout=300)
        assert same.commands.run("echo connected").stdout == "connected\n"
        assert (sandbox.get_info().end_at - datetime.now(UTC)).total_seconds() >= 290
        Sandbox.connect(sandbox.sandbox_id, timeout=10)  # connect never shortens
        assert (sandbox.get_info().end_at - datetime.now(UTC)).total_seconds() >= 280


def test_list_filters_and_pagination(e2b_server) -> None:
    tag = f"list-{time.time_ns()}"
    created = [Sandbox.create(metadata={"suite": tag, "index": str(i), "odd key&=": "v a/l"}) for i in range(3)]
    try:
        query = SandboxQuery(metadata={"suite": tag})
        found = Sandbox.list(query=query).next_items()
        assert {s.sandbox_id for s in found} == {s.sandbox_id for s in created}
        special = Sandbox.list(query=SandboxQuery(metadata={"suite": tag, "odd key&=": "v a/l", "index": "1"}))
        assert [s.sandbox_id for s in special.next_items()] == [created[1].sandbox_id]
        running = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.RUNNING]))
        assert len(running.next_items()) == 3
        paused = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.PAUSED]))
        assert paused.next_items() == []
        pages = Sandbox.list(query=query, limit=2)
        seen = []
        while pages.has_next:
            seen.append(pages.next_items())
        assert [len(p) for p in seen] == [2, 1]
        assert {s.sandbox_id for p in seen for s in p} == {s.sandbox_id for s in created}
        ascending = Sandbox.list(query=query, order="asc").next_items()
        assert [s.sandbox_id for s in ascending] == [s.sandbox_id for s in created]
        later = datetime.now(UTC) + timedelta(minutes=1)
        assert Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, started_after=later)).next_items() == []
        templated = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, template="base")).next_items()
        assert len(templated) == 3
    finally:
        for sandbox in created:
            sandbox.kill()
    assert Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items() == []


def test_metrics(e2b_server) -> None:
    with Sandbox.create() as sandbox:
        sandbox.commands.run("head -c 20000000 /dev/urandom > /home/user/blob")
        metrics = sandbox.get_metrics()
        assert metrics, "a first sample is taken when the sandbox is created"
        sample = metrics[-1]
        assert sample.cpu_count >= 1
        assert 0 <= sample.cpu_used_pct <= 100
        assert sample.mem_total > sample.mem_used > 0
        assert sample.disk_total > 0
        start = int(time.time()) + 1  # the API takes whole seconds
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            newer = sandbox.get_metrics(start=datetime.fromtimestamp(start, UTC))
            if newer:
                assert newer[-1].disk_used >= 20_000_000
                break
            time.sleep(0.5)
        else:
            pytest.fail("no metrics sample within 15 s (E2B samples every 5 s)")
        assert sandbox.get_metrics(end=datetime.fromtimestamp(start - 3600, UTC)) == []


def test_v1_routes_and_error_bodies(e2b_server) -> None:
    headers = {"X-API-Key": e2b_server.api_key}
    created = httpx.post(e2b_server.url + "/sandboxes", headers=headers,
                         json={"templateID": "base", "timeout": 300, "secure": True})
    assert created.status_code == 201
    sandbox_id = created.json()["sandboxID"]
    listed = httpx.get(e2b_server.url + "/sandboxes", headers=headers).json()
    assert sandbox_id in [s["sandboxID"] for s in listed]
    connected = httpx.post(f"{e2b_server.url}/sandboxes/{sandbox_id}/connect", headers=headers, json={"timeout": 300})
    assert connected.status_code == 200 and connected.json()["sandboxID"] == sandbox_id
    refreshed = httpx.post(f"{e2b_server.url}/sandboxes/{sandbox_id}/refreshes", headers=headers,
                           json={"duration": 60})
    assert refreshed.status_code == 204
    assert httpx.delete(f"{e2b_server.url}/sandboxes/{sandbox_id}", headers=headers).status_code == 204
    gone = httpx.delete(f"{e2b_server.url}/sandboxes/{sandbox_id}", headers=headers)
    assert gone.status_code == 404 and gone.json()["code"] == 404
    bad = httpx.post(e2b_server.url + "/v2/sandboxes", headers=headers, content=b"not json")
    assert bad.status_code == 400 and "message" in bad.json()
    bad_timeout = httpx.post(e2b_server.url + "/v2/sandboxes", headers=headers, json={"timeout": "soon"})
    assert bad_timeout.status_code == 400
    no_key = httpx.get(e2b_server.url + "/v2/sandboxes")
    assert no_key.status_code == 401 and no_key.json()["code"] == 401


def test_killed_sandbox_requests_say_not_running(e2b_server) -> None:
    from e2b import SandboxNotRunningException

    sandbox = Sandbox.create()
    sandbox.kill()
    with pytest.raises((SandboxNotRunningException, SandboxNotFoundException)):
        sandbox.commands.run("true")


async def test_async_lifecycle(e2b_server) -> None:
    sandbox = await AsyncSandbox.create(metadata={"async": "yes"}, envs={"A": "1"})
    try:
        info = await sandbox.get_info()
        assert info.metadata == {"async": "yes"}
        await sandbox.set_timeout(120)
        assert (await sandbox.commands.run("echo $A")).stdout == "1\n"
        paginator = AsyncSandbox.list(query=SandboxQuery(metadata={"async": "yes"}))
        assert [s.sandbox_id for s in await paginator.next_items()] == [sandbox.sandbox_id]
        assert await sandbox.get_metrics()
        other = await AsyncSandbox.connect(sandbox.sandbox_id)
        assert await other.is_running()
    finally:
        assert await sandbox.kill() is True
    assert await sandbox.kill() is False
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.get_info(sandbox.sandbox_id)
