"""scripts/mcp_server.py driven as MCP clients drive it: the `mcp` client library over stdio, with real
sandboxes on e2b-local."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2b import SandboxQuery
from e2b_code_interpreter import Sandbox
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SERVER = SCRIPTS / "mcp_server.py"
# Bound for the server's offline command-line modes.
RUN_TIMEOUT_S = 60

sys.path.insert(0, str(SCRIPTS))
from sandbox_tools import TOOLS  # noqa: E402


def clean_env() -> dict[str, str]:
    """The environment without E2B settings (the developer's own must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}


def server_params(e2b_server, cwd: Path) -> StdioServerParameters:
    """How the client starts the server: this Python, pointed at the test's e2b-local."""
    return StdioServerParameters(command=sys.executable, args=[str(SERVER)], env={**clean_env(), **e2b_server.env},
                                 cwd=str(cwd))


def payload(result: Any) -> dict[str, Any]:
    """The JSON text of a tool result, checked against its structured copy."""
    data = json.loads(result.content[0].text)
    assert result.structured_content == data
    return data


def created_by_server() -> list[str]:
    """IDs of the running sandboxes the MCP server tagged as its own."""
    paginator = Sandbox.list(query=SandboxQuery(metadata={"created-by": "mcp_server"}))
    found: list[str] = []
    while paginator.has_next:
        found += [s.sandbox_id for s in paginator.next_items()]
    return found


def test_help_and_tool_list_work_offline(tmp_path: Path) -> None:
    run = [sys.executable, str(SERVER)]
    proc = subprocess.run([*run, "--help"], capture_output=True, text=True, env=clean_env(), cwd=tmp_path,
                          timeout=RUN_TIMEOUT_S, check=False)
    assert proc.returncode == 0
    for needle in ("examples:", "python scripts/mcp_server.py", "claude mcp add", "mcpServers", "exit codes:",
                   "--local", "--cloud"):
        assert needle in proc.stdout
    proc = subprocess.run([*run, "--list-tools"], capture_output=True, text=True, env=clean_env(), cwd=tmp_path,
                          timeout=RUN_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    names = [t["name"] for t in json.loads(proc.stdout)]
    assert names == [t["name"] for t in TOOLS] + ["create_sandbox", "kill_sandbox"]


async def test_tools_over_stdio(e2b_server, tmp_path: Path) -> None:
    params = server_params(e2b_server, tmp_path)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        assert "sandbox" in (init.instructions or "")

        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(listed) == {t["name"] for t in TOOLS} | {"create_sandbox", "kill_sandbox"}
        for shared in TOOLS:  # the same definitions as claude_agent.py, plus the sandbox to use
            schema = listed[shared["name"]].input_schema
            assert schema["properties"].pop("sandbox_id")["type"] == "string"
            assert schema == shared["input_schema"]
            assert listed[shared["name"]].description == shared["description"]

        ran = await session.call_tool("run_code", {"code": "x = 6 * 7\nprint('hello')\nx"})
        assert ran.is_error is False
        assert payload(ran) == {"stdout": "hello\n", "stderr": "", "result": "42", "error": None}

        written = await session.call_tool("write_file", {"path": "notes/a.txt", "content": "first line\n"})
        assert payload(written) == {"path": "/home/user/notes/a.txt", "bytes": 11}
        read = await session.call_tool("read_file", {"path": "/home/user/notes/a.txt"})
        assert read.is_error is False and payload(read)["content"] == "first line\n"
        listing = await session.call_tool("list_files", {"path": "notes"})
        assert [e["name"] for e in payload(listing)["entries"]] == ["a.txt"]
        command = await session.call_tool("run_command", {"command": "cat notes/a.txt | wc -c"})
        assert payload(command)["stdout"] == "11\n"

        raised = await session.call_tool("run_code", {"code": "x / 0"})  # state survived: x is defined
        assert raised.is_error is True and payload(raised)["error"]["name"] == "ZeroDivisionError"
        chart = await session.call_tool(
            "run_code", {"code": "import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()"})
        [image] = chart.content[1:]
        assert image.type == "image" and image.mime_type == "image/png"
        assert base64.b64decode(image.data).startswith(b"\x89PNG")
        missing = await session.call_tool("read_file", {"path": "nope.txt"})
        assert missing.is_error is True and "not found" in payload(missing)["error"]
        wrong = await session.call_tool("run_code", {"cod": "1"})
        assert wrong.is_error is True and "'code'" in payload(wrong)["error"]
        with pytest.raises(MCPError, match="unknown tool"):
            await session.call_tool("format_disk", {})

        created = payload(await session.call_tool("create_sandbox", {"timeout": 600}))
        other = created["sandbox_id"]
        fresh = await session.call_tool("run_code", {"code": "x", "sandbox_id": other})
        assert fresh.is_error is True and payload(fresh)["error"]["name"] == "NameError"  # a separate kernel
        await session.call_tool("write_file", {"path": "only-here.txt", "content": "2", "sandbox_id": other})
        elsewhere = await session.call_tool("read_file", {"path": "only-here.txt"})
        assert elsewhere.is_error is True

        assert payload(await session.call_tool("kill_sandbox", {"sandbox_id": other})) == {
            "sandbox_id": other, "killed": True}
        gone = await session.call_tool("run_code", {"code": "1", "sandbox_id": other})
        assert gone.is_error is True and "not found" in payload(gone)["error"]

        kept = payload(await session.call_tool("create_sandbox", {}))["sandbox_id"]
        running = created_by_server()
        assert kept in running and len(running) == 2  # the default sandbox and the one just created

    assert created_by_server() == []  # the server killed its sandboxes when the client disconnected


async def test_reaches_a_sandbox_by_id_and_leaves_it_running(e2b_server, tmp_path: Path) -> None:
    sandbox = Sandbox.create()
    try:
        sandbox.files.write("/home/user/given.txt", "from the test")
        async with stdio_client(server_params(e2b_server, tmp_path)) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("read_file", {"path": "given.txt", "sandbox_id": sandbox.sandbox_id})
            assert payload(result)["content"] == "from the test"
            refused = await session.call_tool("kill_sandbox", {"sandbox_id": sandbox.sandbox_id})
            assert refused.is_error is True and "confirm" in json.dumps(payload(refused))
            assert sandbox.is_running()  # not created by the server: kept without confirm
            unknown = await session.call_tool("kill_sandbox", {"sandbox_id": "somebody-elses-sandbox"})
            assert unknown.is_error is True
        assert sandbox.is_running()
    finally:
        sandbox.kill()


def test_sigterm_kills_the_sandboxes_it_created(e2b_server, tmp_path: Path) -> None:
    """A client that gives up waiting sends SIGTERM; the sandboxes must not outlive the server."""
    proc = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**clean_env(), **e2b_server.env}, cwd=tmp_path)
    try:
        def request(message: dict[str, Any]) -> dict[str, Any] | None:
            proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline()) if "id" in message else None

        request({"id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}})
        request({"method": "notifications/initialized"})
        reply = request({"id": 2, "method": "tools/call", "params": {"name": "create_sandbox", "arguments": {}}})
        sandbox_id = reply["result"]["structuredContent"]["sandbox_id"]
        assert sandbox_id in created_by_server()
        proc.terminate()
        assert proc.wait(timeout=RUN_TIMEOUT_S) == 0
        assert f"killed sandbox {sandbox_id}" in proc.stderr.read()
        assert created_by_server() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
