"""The sandbox verbs, each checked against the SDK's view of the same sandboxes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import ROOTFS_CACHE, LocalServer
from e2b import Sandbox, SandboxQuery, SandboxState

from e2b_local.settings import CATALOGUE

README = Path(__file__).resolve().parents[2] / "README.md"
REFERENCE = Path(__file__).resolve().parents[2] / "references" / "local-sandboxes.md"


def cli(server: LocalServer, *args: str, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "E2B_LOCAL_HOME": str(server.home), "E2B_LOCAL_ROOTFS": ROOTFS_CACHE}
    return subprocess.run([sys.executable, "-m", "e2b_local", *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=timeout)


def cli_json(server: LocalServer, *args: str) -> object:
    result = cli(server, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _sdk_list(server: LocalServer, run: str, states: list[str]) -> dict[str, object]:
    query = SandboxQuery(metadata={"cli-run": run}, state=[SandboxState(s) for s in states])
    return {s.sandbox_id: s for s in Sandbox.list(query=query, **server.sdk).next_items()}


def test_ps_inspect_pause_resume_against_the_sdk(e2b_server: LocalServer, tagged) -> None:
    run, boxes = tagged
    listed = cli_json(e2b_server, "ps", "--json", "--filter", f"cli-run={run}")
    sdk = _sdk_list(e2b_server, run, ["running"])
    assert {s["sandboxID"] for s in listed} == set(sdk) == {b.sandbox_id for b in boxes}
    for s in listed:
        seen = sdk[s["sandboxID"]]
        assert (s["templateID"], s["state"], s["metadata"]) == (seen.template_id, seen.state.value, seen.metadata)
    paused = boxes[0].sandbox_id
    assert cli(e2b_server, "pause", paused).stdout.strip() == paused
    assert Sandbox.get_info(paused, **e2b_server.sdk).state.value == "paused"
    running_only = {s["sandboxID"] for s in cli_json(e2b_server, "ps", "--json", "--filter", f"cli-run={run}")}
    everything = cli_json(e2b_server, "ps", "--all", "--json", "--filter", f"cli-run={run}")
    assert running_only == set(_sdk_list(e2b_server, run, ["running"])) == {boxes[1].sandbox_id}
    assert {s["sandboxID"]: s["state"] for s in everything} == {
        i: s.state.value for i, s in _sdk_list(e2b_server, run, ["running", "paused"]).items()}
    (detail,) = cli_json(e2b_server, "inspect", paused)
    info = Sandbox.get_info(paused, **e2b_server.sdk)
    assert (detail["sandboxID"], detail["state"], detail["metadata"]) == (paused, "paused", info.metadata)
    assert detail["cpuCount"] == info.cpu_count and "envdAccessToken" not in detail
    table = cli(e2b_server, "ps", "--all").stdout
    assert paused in table and "paused" in table and f"cli-run={run}" in table
    assert cli(e2b_server, "resume", paused).returncode == 0
    assert Sandbox.get_info(paused, **e2b_server.sdk).state.value == "running"


def test_inspect_of_an_unknown_sandbox_is_one_line(e2b_server: LocalServer) -> None:
    for verb in ("inspect", "logs"):
        result = cli(e2b_server, verb, "nosuchsandbox")
        assert result.returncode == 1
        assert result.stderr.strip() == "e2b-local: error: sandbox 'nosuchsandbox' not found (404)"


def test_stats_against_the_sdk(e2b_server: LocalServer, tagged) -> None:
    _, boxes = tagged
    target = boxes[0]
    deadline = time.monotonic() + 30
    while not (sdk := target.get_metrics()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sdk, "no metrics sample in 30 s"
    samples = cli_json(e2b_server, "stats", "--json", target.sandbox_id)
    assert set(samples) == {target.sandbox_id}
    ours = samples[target.sandbox_id]
    assert (ours["cpuCount"], ours["memTotal"], ours["diskTotal"]) == (sdk[-1].cpu_count, sdk[-1].mem_total,
                                                                       sdk[-1].disk_total)
    table = cli(e2b_server, "stats", "--no-stream", target.sandbox_id).stdout
    assert target.sandbox_id in table and "MiB" in table


def test_kill_asks_first_and_kills_by_filter(e2b_server: LocalServer, tagged) -> None:
    run, boxes = tagged
    declined = cli(e2b_server, "kill", boxes[0].sandbox_id, stdin="n\n")
    assert declined.returncode == 1 and "Kill 1 sandbox" in declined.stderr
    assert set(_sdk_list(e2b_server, run, ["running"])) == {b.sandbox_id for b in boxes}
    killed = cli_json(e2b_server, "kill", "--all", "--filter", f"cli-run={run}", "--filter", "n=0", "--yes",
                      "--json")
    assert killed == [boxes[0].sandbox_id]
    assert set(_sdk_list(e2b_server, run, ["running", "paused"])) == {boxes[1].sandbox_id}
    log = cli(e2b_server, "logs", "--server").stdout
    assert f"sandbox {boxes[0].sandbox_id} created from base" in log
    assert f"sandbox {boxes[0].sandbox_id} killed" in log
    boxes.pop(0)


def _read_until(stream, needle: str, seconds: float = 60) -> str:
    """What `stream` printed up to the line holding `needle` (or its end, or the deadline)."""
    deadline = time.monotonic() + seconds
    seen = ""
    while needle not in seen and time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
    return seen


def test_logs_of_a_sandbox_and_follow_a_running_command(e2b_server: LocalServer, tagged) -> None:
    _, boxes = tagged
    target = boxes[0]
    lines = cli(e2b_server, "logs", target.sandbox_id).stdout.splitlines()
    assert "INFO  lifecycle Sandbox created" in lines[0]
    env = {**os.environ, "E2B_LOCAL_HOME": str(e2b_server.home), "E2B_LOCAL_ROOTFS": ROOTFS_CACHE}
    follower = subprocess.Popen([sys.executable, "-m", "e2b_local", "logs", "-f", target.sandbox_id],
                                stdout=subprocess.PIPE, text=True, env=env)
    try:
        # The second line is printed only once the test has seen the first through `logs -f`.
        handle = target.commands.run(
            "echo first-line; echo to-stderr >&2; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo second-line",
            background=True)
        # An output line is its text followed by its fields (the command line shows in "Process started").
        seen = _read_until(follower.stdout, "first-line  pid=")
        assert "first-line  pid=" in seen and "stream=stdout" in seen
        assert "Process started" in seen
        assert "second-line  pid=" not in seen
        target.files.write("/tmp/go", "")
        seen = _read_until(follower.stdout, "second-line  pid=")
        assert "second-line  pid=" in seen
        assert handle.wait().exit_code == 0
        target.kill()
        boxes.pop(0)
        rest = follower.stdout.read()
        assert "Sandbox killed" in rest
        assert follower.wait(timeout=60) == 0
    finally:
        follower.kill()
        follower.wait()
    # What it printed stays readable after the kill, the command's output with it.
    after = cli(e2b_server, "logs", target.sandbox_id).stdout
    assert "first-line" in after and "to-stderr  pid=" in after and "stream=stderr" in after


def test_templates_config_completion(e2b_server: LocalServer) -> None:
    health = httpx.get(e2b_server.url + "/health").json()
    assert cli_json(e2b_server, "templates", "--json") == health["templates"]
    rows = cli_json(e2b_server, "config", "--json")
    assert [r["name"] for r in rows] == [info.name for info in CATALOGUE]
    home = next(r for r in rows if r["name"] == "E2B_LOCAL_HOME")
    assert (home["value"], home["source"]) == (str(e2b_server.home.resolve()), "environment")
    assert next(r for r in rows if r["name"] == "E2B_LOCAL_MAX_PIDS")["source"] == "default"
    script = cli(e2b_server, "completion", "bash").stdout
    assert "_E2B_LOCAL_COMPLETE" in script and "complete " in script


def test_not_running_is_exit_3(tmp_path: Path) -> None:
    env = {**os.environ, "E2B_LOCAL_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-m", "e2b_local", "ps"], capture_output=True, text=True, env=env)
    assert result.returncode == 3
    assert result.stderr.strip() == (f"e2b-local: error: e2b-local is not running for {(tmp_path / 'home')}; "
                                     "start it with: e2b-local start")


def test_settings_are_listed_identically_in_help_readme_and_reference() -> None:
    help_text = subprocess.run([sys.executable, "-m", "e2b_local", "--help"], capture_output=True, text=True).stdout
    readme, reference = README.read_text(), REFERENCE.read_text()
    help_lines = "\n".join(line.strip() for line in help_text.splitlines())
    for info in CATALOGUE:
        row = f"| `{info.name}` | {info.default} | {info.meaning} |"
        assert row in readme, row
        assert row in reference, row
        assert f"{info.name}\n{info.meaning} (default: {info.default})" in help_lines
    for text in (readme, reference):
        assert {line.split("`")[1] for line in text.splitlines() if line.startswith("| `E2B_LOCAL_")} == {
            info.name for info in CATALOGUE}
