"""scripts/claude_agent.py as a user runs it: the real anthropic SDK against a scripted Messages API on
loopback, and real sandboxes on e2b-local.

The model is the only thing faked, at the HTTP boundary: each test scripts the turns (tool calls,
then an answer) and then checks what the script sent back, above all the tool_result blocks.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2b_code_interpreter import Sandbox

from skill.fake_anthropic import FakeAnthropic, presented_key, text, tool_use, turn

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
AGENT = SCRIPTS / "claude_agent.py"
# Bound for one run of the script: a sandbox start plus a few code cells, on a busy machine.
RUN_TIMEOUT_S = 300

sys.path.insert(0, str(SCRIPTS))
from claude_agent import DEFAULT_MODEL  # noqa: E402
from sandbox_tools import TOOLS  # noqa: E402


def clean_env() -> dict[str, str]:
    """The environment without E2B or Anthropic settings (the developer's own must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("E2B_", "ANTHROPIC_"))}


@pytest.fixture
def fake() -> FakeAnthropic:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def agent_env(e2b_server, fake: FakeAnthropic) -> dict[str, str]:
    """The script talks to e2b-local for sandboxes and to the fake for the model."""
    return {**clean_env(), **e2b_server.env, "ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": fake.api_key}


def run_agent(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the script; a clean working directory keeps a stray .env out."""
    return subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=RUN_TIMEOUT_S, check=False)


def result_payload(block: dict[str, Any]) -> dict[str, Any]:
    """The JSON payload of a tool_result block (its first content part)."""
    assert block["content"][0]["type"] == "text"
    return json.loads(block["content"][0]["text"])


def assert_gone(sandbox_id: str) -> None:
    """The script killed the sandbox it created."""
    assert Sandbox.kill(sandbox_id) is False


# -- no model, no sandbox --------------------------------------------------------------------------


def test_print_tools_needs_no_key(tmp_path: Path) -> None:
    proc = run_agent(clean_env(), tmp_path, "--print-tools")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == TOOLS
    assert [t["name"] for t in TOOLS] == ["run_code", "run_command", "write_file", "read_file", "list_files"]


def test_help_documents_examples_model_and_exit_codes(tmp_path: Path) -> None:
    proc = run_agent(clean_env(), tmp_path, "--help")
    assert proc.returncode == 0
    for needle in ("examples:", "python scripts/claude_agent.py", "exit codes:", DEFAULT_MODEL, "ANTHROPIC_MODEL",
                   "--max-turns", "--no-stream", "--local", "--cloud"):
        assert needle in proc.stdout


def test_missing_key_exits_3_before_any_sandbox(tmp_path: Path) -> None:
    proc = run_agent(clean_env(), tmp_path, "What is 6*7?")
    assert proc.returncode == 3
    assert proc.stderr.count("error:") == 1 and "ANTHROPIC_API_KEY" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr and "sandbox" not in proc.stderr and proc.stdout == ""


def test_bad_key_from_dotenv_exits_3(fake: FakeAnthropic, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ANTHROPIC_API_KEY=sk-ant-not-the-right-one\n")
    env = {**clean_env(), "ANTHROPIC_BASE_URL": fake.url}
    proc = run_agent(env, tmp_path, "What is 6*7?")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("error:") == 1
    assert "rejected the API key" in proc.stderr and "invalid x-api-key" in proc.stderr
    assert "fix:" in proc.stderr and "ANTHROPIC_API_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr and "sandbox" not in proc.stderr and proc.stdout == ""
    assert len(fake.requests) == 1  # a 401 is not retried
    assert presented_key(fake.requests[0].headers) == "sk-ant-not-the-right-one"  # read from .env


# -- tool use with real sandboxes ------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
def test_multi_turn_tool_use(stream: bool, fake: FakeAnthropic, agent_env: dict[str, str], tmp_path: Path) -> None:
    answer = "The numbers add up to 6; times seven that is 42."
    fake.script(
        turn(text("I will store the numbers first."),
             tool_use("write_file", {"path": "numbers.txt", "content": "1\n2\n3\n"})),
        turn(tool_use("run_code", {"code": "total = sum(int(x) for x in open('numbers.txt'))\n"
                                           "print('total', total)\ntotal * 7"})),
        turn(tool_use("run_command", {"command": "wc -l numbers.txt && echo note >&2"}),
             tool_use("read_file", {"path": "/home/user/numbers.txt"}),
             tool_use("list_files", {})),
        turn(text(answer)),
    )
    args = ["--json"] if stream else ["--no-stream"]
    proc = run_agent(agent_env, tmp_path, *args, "Add the numbers 1, 2, 3 and multiply by seven.")
    assert proc.returncode == 0, proc.stderr
    assert fake.problems == []

    requests = fake.requests
    assert len(requests) == 4
    for request in requests:
        assert request.body["model"] == DEFAULT_MODEL
        assert request.body["tools"] == TOOLS
        assert bool(request.body.get("stream")) is stream
        assert request.body["system"]

    first_call = fake.requests[1].body["messages"][1]
    assert first_call["role"] == "assistant" and first_call["content"][0] == text("I will store the numbers first.")
    assert first_call["content"][1]["input"] == {"path": "numbers.txt", "content": "1\n2\n3\n"}

    [written] = requests[1].tool_results()
    assert written["tool_use_id"] == first_call["content"][1]["id"] and written["is_error"] is False
    assert result_payload(written) == {"path": "/home/user/numbers.txt", "bytes": 6}

    [ran] = requests[2].tool_results()
    payload = result_payload(ran)
    assert ran["is_error"] is False
    assert payload["stdout"] == "total 6\n" and payload["result"] == "42" and payload["error"] is None

    command, read, listed = requests[3].tool_results()
    assert [b["tool_use_id"] for b in (command, read, listed)] == [
        b["id"] for b in requests[3].body["messages"][-2]["content"] if b["type"] == "tool_use"]
    assert result_payload(command) == {"exit_code": 0, "stdout": "3 numbers.txt\n", "stderr": "note\n"}
    assert result_payload(read)["content"] == "1\n2\n3\n"
    assert "/home/user/numbers.txt" in [e["path"] for e in result_payload(listed)["entries"]]
    assert not any(b["is_error"] for b in (command, read, listed))

    assert "write_file numbers.txt" in proc.stderr and "run_code (python): total = sum" in proc.stderr
    assert "run_command: wc -l numbers.txt" in proc.stderr
    if stream:
        assert "I will store the numbers first." in proc.stderr  # streamed text is echoed as it arrives
        report = json.loads(proc.stdout)
        assert report["answer"] == answer and report["stop_reason"] == "end_turn" and report["turns"] == 4
        assert [c["name"] for c in report["tool_calls"]] == [
            "write_file", "run_code", "run_command", "read_file", "list_files"]
        assert report["kept"] is False and report["model"] == DEFAULT_MODEL
        assert report["usage"]["input_tokens"] > 0
        sandbox_id = report["sandbox_id"]
    else:
        assert proc.stdout == answer + "\n"
        sandbox_id = proc.stderr.split("created sandbox ")[1].split()[0]
    assert f"killed sandbox {sandbox_id}" in proc.stderr
    assert_gone(sandbox_id)


def test_failures_and_images_go_back_to_the_model(
    fake: FakeAnthropic, agent_env: dict[str, str], tmp_path: Path
) -> None:
    chart = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9, 16])\nplt.title('squares')\nplt.show()"
    fake.script(
        turn(tool_use("run_code", {"code": "print('before')\n1 / 0"})),
        turn(tool_use("run_code", {"code": chart})),
        turn(tool_use("run_command", {"command": "echo partial; exit 3"}),
             tool_use("read_file", {"path": "missing.txt"}),
             tool_use("format_disk", {"device": "/dev/sda"})),
        turn(text("Done.")),
    )
    proc = run_agent(agent_env, tmp_path, "--json", "--no-stream", "Try a few things.")
    assert proc.returncode == 0, proc.stderr
    assert fake.problems == []

    [raised] = fake.requests[1].tool_results()
    payload = result_payload(raised)
    assert raised["is_error"] is True
    assert payload["stdout"] == "before\n"
    assert payload["error"]["name"] == "ZeroDivisionError" and payload["error"]["value"] == "division by zero"
    assert "ZeroDivisionError" in payload["error"]["traceback"]

    [drawn] = fake.requests[2].tool_results()
    assert drawn["is_error"] is False
    images = [part for part in drawn["content"] if part["type"] == "image"]
    assert len(images) == 1 and result_payload(drawn)["images"] == 1
    assert images[0]["source"]["type"] == "base64" and images[0]["source"]["media_type"] == "image/png"
    assert base64.b64decode(images[0]["source"]["data"]).startswith(b"\x89PNG\r\n\x1a\n")

    command, missing, unknown = fake.requests[3].tool_results()
    assert command["is_error"] is True
    assert result_payload(command)["exit_code"] == 3 and result_payload(command)["stdout"] == "partial\n"
    assert missing["is_error"] is True and "not found" in result_payload(missing)["error"]
    assert unknown["is_error"] is True and "unknown tool 'format_disk'" in result_payload(unknown)["error"]

    report = json.loads(proc.stdout)
    assert [c["is_error"] for c in report["tool_calls"]] == [True, False, True, True, True]
    assert "ZeroDivisionError: division by zero" in proc.stderr  # the outcome is logged
    assert_gone(report["sandbox_id"])


def test_max_turns_stops_and_keep_leaves_the_sandbox(
    fake: FakeAnthropic, agent_env: dict[str, str], tmp_path: Path
) -> None:
    fake.script(
        turn(tool_use("write_file", {"path": "marker.txt", "content": "kept"})),
        turn(tool_use("run_code", {"code": "open('never.txt', 'w').write('x')"})),
        turn(text("unreachable")),
    )
    proc = run_agent(agent_env, tmp_path, "--json", "--keep", "--max-turns", "2", "Loop forever.")
    assert proc.returncode == 5, proc.stderr
    assert "--max-turns" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["stop_reason"] == "max_turns" and report["turns"] == 2 and report["kept"] is True
    assert [c["name"] for c in report["tool_calls"]] == ["write_file"]  # the last turn's tools never ran
    assert len(fake.requests) == 2
    sandbox = Sandbox.connect(report["sandbox_id"])
    try:
        assert sandbox.files.read("/home/user/marker.txt") == "kept"
        assert not sandbox.files.exists("/home/user/never.txt")
    finally:
        sandbox.kill()


def test_sandbox_id_is_used_and_left_running(
    fake: FakeAnthropic, agent_env: dict[str, str], tmp_path: Path
) -> None:
    sandbox = Sandbox.create()
    try:
        sandbox.files.write("/home/user/given.txt", "prepared by the test")
        fake.script(turn(tool_use("read_file", {"path": "given.txt"})), turn(text("It says hello.")))
        proc = run_agent(agent_env, tmp_path, "--sandbox-id", sandbox.sandbox_id, "What does given.txt say?")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "It says hello.\n"
        assert f"connected to sandbox {sandbox.sandbox_id}" in proc.stderr and "killed" not in proc.stderr
        [read] = fake.requests[1].tool_results()
        assert result_payload(read)["content"] == "prepared by the test"
        assert sandbox.is_running()
    finally:
        sandbox.kill()


def test_unknown_sandbox_id_exits_4_before_calling_the_model(
    fake: FakeAnthropic, agent_env: dict[str, str], tmp_path: Path
) -> None:
    proc = run_agent(agent_env, tmp_path, "--sandbox-id", "nosuchsandbox0000000", "Hello?")
    assert proc.returncode == 4, proc.stderr
    assert "sandbox not found" in proc.stderr and "fix:" in proc.stderr and "Traceback" not in proc.stderr
    assert fake.requests == []  # no tokens spent on a run that cannot work
