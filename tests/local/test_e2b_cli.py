"""The real E2B CLI (@e2b/cli, pinned in tests/js) against e2b-local: each verb checked against the SDK."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import JS_PROJECT, LocalServer
from e2b import Sandbox, SandboxQuery, SandboxState, Template

E2B_CLI = JS_PROJECT / "node_modules" / ".bin" / "e2b"

pytestmark = pytest.mark.skipif(not E2B_CLI.exists(),
                                reason="no E2B CLI in tests/js (install.sh --test, Node 20.18+)")


def e2b(server: LocalServer, *args: str, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the E2B CLI with the environment that points it at `server`, as a user would."""
    env = {**os.environ, **server.env, "NO_COLOR": "1"}
    return subprocess.run([str(E2B_CLI), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def e2b_json(server: LocalServer, *args: str) -> object:
    result = e2b(server, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _sdk_ids(server: LocalServer, run: str, states: tuple[str, ...] = ("running", "paused")) -> set[str]:
    query = SandboxQuery(metadata={"cli-run": run}, state=[SandboxState(s) for s in states])
    return {s.sandbox_id for s in Sandbox.list(query=query, **server.sdk).next_items()}


def test_sandbox_list_matches_the_sdk(e2b_server: LocalServer, tagged) -> None:
    run, boxes = tagged
    boxes[1].pause()
    running = e2b_json(e2b_server, "sandbox", "list", "--metadata", f"cli-run={run}", "--format", "json")
    assert [s["sandboxId"] for s in running] == [boxes[0].sandbox_id]
    both = e2b_json(e2b_server, "sandbox", "list", "--state", "running,paused", "--metadata", f"cli-run={run}",
                    "--order", "asc", "--format", "json")
    assert [(s["sandboxId"], s["state"]) for s in both] == [(boxes[0].sandbox_id, "running"),
                                                           (boxes[1].sandbox_id, "paused")]
    for listed, box in zip(both, boxes, strict=True):
        info = Sandbox.get_info(box.sandbox_id, **e2b_server.sdk)
        assert listed["templateId"] == info.template_id and listed["name"] == info.name == "base"
        assert listed["metadata"] == info.metadata == {"cli-run": run, "n": str(boxes.index(box))}
        assert (listed["cpuCount"], listed["memoryMB"]) == (info.cpu_count, info.memory_mb)
        assert listed["envdVersion"] == info.envd_version
    table = e2b(e2b_server, "sandbox", "list", "--state", "paused", "--metadata", f"cli-run={run}").stdout
    assert boxes[1].sandbox_id in table and "Paused" in table and boxes[0].sandbox_id not in table


def test_sandbox_logs_follows_a_command_until_the_kill(e2b_server: LocalServer, tagged) -> None:
    _, boxes = tagged
    target = boxes.pop(0)
    env = {**os.environ, **e2b_server.env, "NO_COLOR": "1"}
    follower = subprocess.Popen([str(E2B_CLI), "sandbox", "logs", target.sandbox_id, "--follow", "--format",
                                 "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        target.commands.run("echo from-the-e2b-cli")
        printed: list[dict[str, str]] = []
        deadline = time.monotonic() + 60
        while not any(p.get("message") == "from-the-e2b-cli" for p in printed) and time.monotonic() < deadline:
            line = follower.stdout.readline()
            if not line:
                break
            if line.startswith("{"):
                printed.append(json.loads(line))
        output = next(p for p in printed if p.get("message") == "from-the-e2b-cli")
        assert (output["logger"], output["stream"], output["level"]) == ("process", "stdout", "info")
        assert printed[0]["message"] == "Sandbox created" and printed[0]["logger"] == "lifecycle"
        target.kill()
        # The CLI stops following once the sandbox is gone.
        assert follower.wait(timeout=60) == 0
    finally:
        follower.kill()
        follower.wait()
        follower.stdout.close()
        follower.stderr.close()


def test_sandbox_metrics_match_the_sdk(e2b_server: LocalServer, tagged) -> None:
    _, boxes = tagged
    target = boxes[0]
    deadline = time.monotonic() + 30
    while not target.get_metrics() and time.monotonic() < deadline:
        time.sleep(0.5)
    result = e2b(e2b_server, "sandbox", "metrics", target.sandbox_id, "--format", "json")
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    sdk = target.get_metrics()
    assert printed and sdk
    assert {p["cpuCount"] for p in printed} == {m.cpu_count for m in sdk}
    assert {p["memTotal"] for p in printed} == {m.mem_total for m in sdk}
    assert all(0 < p["memUsed"] <= p["memTotal"] and p["diskTotal"] > 0 for p in printed)
    pretty = e2b(e2b_server, "sandbox", "metrics", target.sandbox_id).stdout
    assert f"{sdk[0].cpu_count} Cores" in pretty and "MiB" in pretty


def test_sandbox_kill_by_id_and_by_metadata(e2b_server: LocalServer, tagged) -> None:
    run, boxes = tagged
    first, second = boxes
    killed = e2b(e2b_server, "sandbox", "kill", first.sandbox_id)
    assert killed.returncode == 0, killed.stderr
    assert f"Sandbox {first.sandbox_id} has been killed" in killed.stdout
    assert _sdk_ids(e2b_server, run) == {second.sandbox_id}
    again = e2b(e2b_server, "sandbox", "kill", first.sandbox_id)
    assert f"Sandbox {first.sandbox_id} wasn't found" in again.stdout + again.stderr
    second.pause()
    by_filter = e2b(e2b_server, "sandbox", "kill", "--all", "--state", "paused", "--metadata", f"cli-run={run}")
    assert by_filter.returncode == 0, by_filter.stderr
    assert f"Sandbox {second.sandbox_id} has been killed" in by_filter.stdout
    assert _sdk_ids(e2b_server, run) == set()
    boxes.clear()


def test_template_create_list_and_delete(e2b_server: LocalServer, tmp_path: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    (tmp_path / "e2b.Dockerfile").write_text("FROM e2bdev/base\n"
                                             "RUN echo built-by-the-e2b-cli > /opt/marker.txt\n"
                                             "WORKDIR /opt\n")
    created = e2b(e2b_server, "template", "create", name, "--cpu-count", "1", "--memory-mb", "512", cwd=tmp_path,
                  timeout=900)
    try:
        assert created.returncode == 0, created.stdout + created.stderr
        assert f"Building sandbox template {name} finished" in created.stdout
        listed = e2b_json(e2b_server, "template", "list", "--format", "json")
        mine = [t for t in listed if name in t["aliases"]]
        assert len(mine) == 1
        assert (mine[0]["cpuCount"], mine[0]["memoryMB"], mine[0]["buildStatus"]) == (1, 512, "ready")
        assert Template.exists(name, **e2b_server.sdk)
        assert name in e2b(e2b_server, "template", "list").stdout
        sandbox = Sandbox.create(name, **e2b_server.sdk)
        try:
            assert sandbox.commands.run("cat marker.txt").stdout == "built-by-the-e2b-cli\n"
            assert (sandbox.get_info().cpu_count, sandbox.get_info().memory_mb) == (1, 512)
        finally:
            sandbox.kill()
    finally:
        deleted = e2b(e2b_server, "template", "delete", name, "--yes")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert not Template.exists(name, **e2b_server.sdk)
    assert name not in e2b(e2b_server, "template", "list").stdout
