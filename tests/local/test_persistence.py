"""Pause and resume, auto-pause and auto-resume, and restarts of the server, through the real SDK."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import _free_port, start_server, stop_server
from e2b import Sandbox, SandboxNotRunningException, SandboxQuery, SandboxState
from e2b_code_interpreter import Sandbox as CodeSandbox

from e2b_local.isolation.cgroups import SandboxCgroup
from local.persistence_helpers import read_token, start_holder, wait_for


def test_full_pause_keeps_memory_processes_and_files(e2b_server) -> None:
    sandbox = Sandbox.create(metadata={"test": "full-pause"})
    try:
        token = start_holder(sandbox)
        sandbox.files.write("/home/user/notes.txt", "written before the pause")
        assert sandbox.pause() is True
        assert sandbox.pause() is False  # already paused
        assert Sandbox.pause(sandbox.sandbox_id) is False
        info = sandbox.get_info()
        assert info.state == SandboxState.PAUSED
        paused = Sandbox.list(query=SandboxQuery(metadata={"test": "full-pause"}, state=[SandboxState.PAUSED]))
        assert [s.sandbox_id for s in paused.next_items()] == [sandbox.sandbox_id]
        with pytest.raises(SandboxNotRunningException, match="paused"):
            sandbox.commands.run("true")
        assert sandbox.is_running() is False

        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
        assert read_token(resumed) == token  # the same process, with its memory
        assert resumed.files.read("/home/user/notes.txt") == "written before the pause"
        info = resumed.get_info()
        assert info.state == SandboxState.RUNNING
        assert 100 <= (info.end_at - datetime.now(UTC)).total_seconds() <= 121
    finally:
        assert Sandbox.kill(sandbox.sandbox_id) is True


def test_kill_a_paused_sandbox(e2b_server) -> None:
    sandbox = Sandbox.create()
    start_holder(sandbox)
    sandbox.pause()
    assert sandbox.kill() is True
    assert Sandbox.kill(sandbox.sandbox_id) is False
    assert sandbox.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]


def test_filesystem_pause_keeps_files_only(e2b_server) -> None:
    sandbox = Sandbox.create(envs={"KEPT_VAR": "still set"})
    try:
        start_holder(sandbox)
        sandbox.commands.run("pip --version > /home/user/pip.txt; echo data > /tmp/in-tmp")
        assert sandbox.pause(mode="filesystem") is True
        assert sandbox.pause(mode="filesystem") is False
        assert sandbox.get_info().state == SandboxState.PAUSED
        resumed = Sandbox.connect(sandbox.sandbox_id)
        assert read_token(resumed) is None  # a fresh boot: the process is gone
        assert resumed.commands.run("cat /home/user/pip.txt").stdout.startswith("pip ")
        assert resumed.files.read("/tmp/in-tmp") == "data\n"
        assert resumed.commands.run("echo $KEPT_VAR").stdout == "still set\n"  # the env vars come back
    finally:
        sandbox.kill()


def test_reboot_on_resume_drops_memory(e2b_server) -> None:
    sandbox = Sandbox.create()
    try:
        start_holder(sandbox)
        sandbox.files.write("/home/user/kept.txt", "files survive a reboot")
        sandbox.pause()
        rebooted = Sandbox.connect(sandbox.sandbox_id, on_resume="reboot")
        assert read_token(rebooted) is None
        assert rebooted.files.read("/home/user/kept.txt") == "files survive a reboot"
        # On a running sandbox the reboot is a no-op, as on E2B.
        token = start_holder(rebooted)
        again = Sandbox.connect(sandbox.sandbox_id, on_resume="reboot")
        assert read_token(again) == token
    finally:
        sandbox.kill()


def test_auto_pause_at_timeout_then_auto_resume(e2b_server) -> None:
    sandbox = CodeSandbox.create(timeout=60, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        assert sandbox.get_info().lifecycle == {"on_timeout": "pause", "auto_resume": True}
        assert sandbox.run_code("answer = 41; answer").text == "41"
        sandbox.set_timeout(1)  # after the setup, so that no request of it meets the pause
        wait_for(lambda: sandbox.get_info().state == SandboxState.PAUSED, "the automatic pause")
        assert sandbox.get_info().end_at <= datetime.now(UTC)  # a paused sandbox's end is its pause
        assert sandbox.run_code("answer + 1").text == "42"  # this request resumed it, kernel state included
        info = sandbox.get_info()
        assert info.state == SandboxState.RUNNING
        assert 30 <= (info.end_at - datetime.now(UTC)).total_seconds() <= 60  # the create-time timeout again
    finally:
        sandbox.kill()


def test_auto_pause_filesystem_mode_needs_connect(e2b_server) -> None:
    lifecycle = {"on_timeout": {"action": "pause", "mode": "filesystem"}}
    sandbox = Sandbox.create(timeout=60, lifecycle=lifecycle)
    try:
        sandbox.files.write("/home/user/kept.txt", "kept")
        sandbox.set_timeout(1)
        wait_for(lambda: sandbox.get_info().state == SandboxState.PAUSED, "the automatic pause")
        with pytest.raises(SandboxNotRunningException):
            sandbox.commands.run("true")  # no auto-resume
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=60)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
    finally:
        sandbox.kill()


def test_connect_routes_answer_201_when_resuming(e2b_server) -> None:
    headers = {"X-API-Key": e2b_server.api_key}
    sandbox = Sandbox.create()
    try:
        url = f"{e2b_server.url}/sandboxes/{sandbox.sandbox_id}"
        for route in ("/connect", "/resume"):
            assert httpx.post(url + "/pause", headers=headers, json={}).status_code == 204
            assert httpx.post(url + "/pause", headers=headers, json={}).status_code == 409
            resumed = httpx.post(url + route, headers=headers, json={"timeout": 60})
            assert resumed.status_code == 201 and resumed.json()["sandboxID"] == sandbox.sandbox_id
        assert httpx.post(url + "/connect", headers=headers, json={"timeout": 60}).status_code == 200
        missing = httpx.post(f"{e2b_server.url}/sandboxes/nosuchsandbox0000000/pause", headers=headers, json={})
        assert missing.status_code == 404
    finally:
        sandbox.kill()


def _registry_record(home: Path, sandbox_id: str) -> dict[str, object]:
    with sqlite3.connect(home / "registry.sqlite3") as db:
        (record,) = db.execute("SELECT record FROM sandboxes WHERE sandbox_id = ?", (sandbox_id,)).fetchone()
    return json.loads(record)


def test_paused_sandbox_survives_server_crash_and_machine_restart(tmp_path: Path) -> None:
    home, port = tmp_path / "home", _free_port()
    server = start_server(home, port)
    env = server.sdk
    sandbox = CodeSandbox.create(timeout=600, **env)
    try:
        sandbox.run_code("secret = 6 * 7")
        sandbox.files.write("/home/user/kept.txt", "on disk")
        sandbox.pause()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        server = start_server(home, port)
        assert Sandbox.get_info(sandbox.sandbox_id, **env).state == SandboxState.PAUSED
        resumed = CodeSandbox.connect(sandbox.sandbox_id, **env)
        assert resumed.run_code("secret").text == "42"  # memory kept across the crash and restart
        assert resumed.files.read("/home/user/kept.txt") == "on disk"

        # A machine restart loses the frozen processes: simulate it while the server is down.
        resumed.pause()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        cgroup = SandboxCgroup(str(_registry_record(home, sandbox.sandbox_id)["key"]))
        cgroup.kill_all()
        cgroup.remove()
        server = start_server(home, port)
        assert Sandbox.get_info(sandbox.sandbox_id, **env).state == SandboxState.PAUSED
        booted = CodeSandbox.connect(sandbox.sandbox_id, **env)
        assert booted.run_code("'secret' in globals()").text == "False"  # booted from its files
        assert booted.files.read("/home/user/kept.txt") == "on disk"
        assert "booting it from its files" in (home / "server.log").read_text()
    finally:
        Sandbox.kill(sandbox.sandbox_id, **env)
        stop_server(server)


def test_unresponsive_agent_at_pause(e2b_server) -> None:
    from e2b import GuestUnresponsiveException, ServiceBusyException

    sandbox = Sandbox.create()
    try:
        sandbox.files.write("/home/user/kept.txt", "kept")
        cgroup = SandboxCgroup(str(_registry_record(e2b_server.home, sandbox.sandbox_id)["key"]))
        cgroup.freeze()  # the agent stops answering, as a wedged guest would
        with pytest.raises(ServiceBusyException):
            sandbox.pause(strict=True)  # refused, the sandbox left as it was
        assert sandbox.get_info().state == SandboxState.RUNNING
        assert sandbox.pause() is True  # a plain pause goes ahead and remembers the agent was silent
        assert sandbox.get_info().envd_unresponsive_at_pause is True
        with pytest.raises(GuestUnresponsiveException):
            Sandbox.connect(sandbox.sandbox_id)
        rebooted = Sandbox.connect(sandbox.sandbox_id, on_resume="reboot")
        assert rebooted.files.read("/home/user/kept.txt") == "kept"
    finally:
        sandbox.kill()
