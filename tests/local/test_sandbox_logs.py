"""Sandbox logs (`/sandboxes/{id}/logs` and v2) through the SDK's generated API client and the E2B CLI."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

import httpx
import pytest
from conftest import JS_PROJECT
from e2b import CommandExitException, ConnectionConfig, Sandbox
from e2b.api import ApiClient
from e2b.api.client.api.sandboxes import get_sandboxes_sandbox_id_logs, get_v_2_sandboxes_sandbox_id_logs
from e2b.api.client.models import LogLevel, LogsDirection, SandboxLogs, SandboxLogsV2Response

E2B_CLI = JS_PROJECT / "node_modules" / ".bin" / "e2b"


def _client(server) -> ApiClient:
    return ApiClient(ConnectionConfig(api_key=server.api_key, api_url=server.url))


def _v2(server, sandbox_id: str, **query) -> SandboxLogsV2Response:
    with _client(server) as client:
        found = get_v_2_sandboxes_sandbox_id_logs.sync(sandbox_id, client=client, **query)
    assert isinstance(found, SandboxLogsV2Response), found
    return found


def _process_entries(logs: SandboxLogsV2Response, message: str, cmd: str) -> list:
    return [e for e in logs.logs if e.message == message and cmd in e.fields.additional_properties.get("cmd", "")]


def test_logs_record_lifecycle_and_processes(e2b_server) -> None:
    sandbox = Sandbox.create()
    try:
        ran = sandbox.commands.run("echo logged-command")
        with pytest.raises(CommandExitException):
            sandbox.commands.run("sh -c 'exit 3'")
        logs = _v2(e2b_server, sandbox.sandbox_id)
        messages = [e.message for e in logs.logs]
        assert messages[0] == "Sandbox created"
        started = _process_entries(logs, "Process started", "echo logged-command")
        exited = _process_entries(logs, "Process exited", "echo logged-command")
        assert len(started) == len(exited) == 1
        assert started[0].fields["pid"] == exited[0].fields["pid"] and started[0].fields["pid"].isdigit()
        assert exited[0].fields["exit_code"] == str(ran.exit_code) == "0"
        failed = _process_entries(logs, "Process exited", "exit 3")
        assert [(e.fields["exit_code"], e.level) for e in failed] == [("3", LogLevel.WARN)]
        assert [e.timestamp for e in logs.logs] == sorted(e.timestamp for e in logs.logs)

        # Reading again adds nothing twice.
        assert len(_v2(e2b_server, sandbox.sandbox_id).logs) == len(logs.logs)
        # Filters and paging.
        warnings = _v2(e2b_server, sandbox.sandbox_id, level=LogLevel.WARN)
        assert [e.message for e in warnings.logs] == ["Process exited"]
        assert [e.message for e in _v2(e2b_server, sandbox.sandbox_id, search="created").logs] == ["Sandbox created"]
        first_two = _v2(e2b_server, sandbox.sandbox_id, limit=2).logs
        assert [e.message for e in first_two] == messages[:2]
        cursor = int((first_two[1].timestamp + timedelta(milliseconds=1)).timestamp() * 1000)
        rest = _v2(e2b_server, sandbox.sandbox_id, cursor=cursor).logs
        assert rest and all(e.timestamp > first_two[1].timestamp for e in rest)
        newest = _v2(e2b_server, sandbox.sandbox_id, direction=LogsDirection.BACKWARD, limit=1).logs
        assert [e.message for e in newest] == [messages[-1]]

        sandbox.pause()
        sandbox.connect()
        sandbox.commands.run("echo after-resume")
    finally:
        sandbox.kill()
    # Kept after the kill, with what the agent recorded right before it.
    after = _v2(e2b_server, sandbox.sandbox_id)
    messages = [e.message for e in after.logs]
    assert messages.index("Sandbox paused") < messages.index("Sandbox resumed") < messages.index("Sandbox killed")
    assert _process_entries(after, "Process exited", "echo after-resume")

    with _client(e2b_server) as client:
        v1 = get_sandboxes_sandbox_id_logs.sync(sandbox.sandbox_id, client=client)
    assert isinstance(v1, SandboxLogs)
    assert len(v1.logs) == len(v1.log_entries) == len(after.logs)
    lines = [json.loads(log.line) for log in v1.logs]
    assert {line["level"] for line in lines} <= {"debug", "info", "warn", "error"}
    assert lines[0]["message"] == "Sandbox created" and lines[0]["logger"] == "lifecycleSvc"


def test_logs_of_an_unknown_sandbox_are_404(e2b_server) -> None:
    headers = {"X-API-Key": e2b_server.api_key}
    for path in ("/sandboxes/nosuchsandbox000000000/logs", "/v2/sandboxes/nosuchsandbox000000000/logs"):
        response = httpx.get(e2b_server.url + path, headers=headers)
        assert response.status_code == 404
        assert response.json()["code"] == 404


def test_the_journal_is_not_reachable_through_the_sandbox_route(e2b_server) -> None:
    sandbox = Sandbox.create()
    try:
        response = httpx.get(f"{e2b_server.url}/journal", headers={
            "E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49983",
            "X-Access-Token": sandbox._envd_access_token or "", "X-API-Key": e2b_server.api_key})
        assert response.status_code in (403, 404)
        assert "entries" not in response.text
    finally:
        sandbox.kill()


@pytest.mark.skipif(not E2B_CLI.exists(), reason="no E2B CLI in tests/js (install.sh --test, Node 20.18+)")
def test_the_e2b_cli_prints_the_logs(e2b_server) -> None:
    sandbox = Sandbox.create()
    try:
        sandbox.commands.run("echo from-the-cli-test")
        env = {**os.environ, **e2b_server.env}
        proc = subprocess.run([str(E2B_CLI), "sandbox", "logs", sandbox.sandbox_id, "--format", "json"], env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        sandbox.kill()
    assert proc.returncode == 0, proc.stderr
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert any(p.get("message") == "Sandbox created" for p in printed)
    assert any("from-the-cli-test" in p.get("cmd", "") for p in printed)
