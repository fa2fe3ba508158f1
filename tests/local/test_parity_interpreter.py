"""The code interpreter as E2B's template runs it, through the real SDK: default contexts, the
server on port 49999 inside the sandbox, its recovery after kill -9, and `/execute` answering at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from conftest import run_js
from e2b import TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox

from local.sandbox_helpers import kill_during_a_long_cell


@pytest.fixture(scope="module")
def sbx(e2b_server) -> Iterator[Sandbox]:
    sandbox = Sandbox.create()
    yield sandbox
    sandbox.kill()


def test_fresh_sandbox_lists_a_python_and_a_javascript_context(e2b_server) -> None:
    sandbox = Sandbox.create()
    try:
        contexts = sandbox.list_code_contexts()
        assert sorted(c.language for c in contexts) == ["javascript", "python"]
        assert all(c.cwd == "/home/user" for c in contexts)
        javascript = next(c for c in contexts if c.language == "javascript")
        # The listed context is the one `language="javascript"` runs in, and it works.
        assert sandbox.run_code("const seen = 40 + 2; seen", language="javascript").text == "42"
        assert sandbox.run_code("seen", context=javascript).text == "42"
        assert len(sandbox.list_code_contexts()) == 2
    finally:
        sandbox.kill()


async def test_fresh_sandbox_lists_default_contexts_async(e2b_server) -> None:
    sandbox = await AsyncSandbox.create()
    try:
        languages = sorted(c.language for c in await sandbox.list_code_contexts())
        assert languages == ["javascript", "python"]
    finally:
        await sandbox.kill()


def test_server_listens_on_49999_inside_the_sandbox(sbx: Sandbox) -> None:
    health = sbx.commands.run("curl -s -w ' %{http_code}' http://127.0.0.1:49999/health")
    assert health.stdout == '"OK" 200'
    # The same API as through the SDK, for programs of the sandbox.
    body = json.dumps({"code": "6 * 7", "context_id": None, "language": None, "env_vars": None})
    result = sbx.commands.run(f"curl -s -X POST -H 'content-type: application/json' -d '{body}' "
                              "http://0.0.0.0:49999/execute")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"type": "result", "text": "42"}.items() <= next(x for x in lines if x["type"] == "result").items()
    assert lines[-1]["type"] == "end_of_execution"
    listening = sbx.commands.run("cat /proc/net/tcp").stdout
    assert ":C34F 00000000:0000 0A" in listening  # 0.0.0.0:49999, LISTEN


def test_kill_9_of_the_kernel_and_the_server_is_survived(sbx: Sandbox) -> None:
    assert sbx.run_code("x = 1; x").text == "1"
    pid = sbx.run_code("import os; os.getpid()").text
    sbx.commands.run(f"kill -9 {pid}", user="root")
    assert sbx.run_code("2 + 2").text == "4"  # a fresh kernel
    # The interpreter's server is the sandbox's pid 1 (the agent), which nothing inside can kill.
    listener = sbx.commands.run("kill -9 1; echo $?", user="root")
    assert listener.stdout.strip() == "0"
    assert sbx.run_code("3 + 3").text == "6"
    assert sbx.commands.run("curl -s http://127.0.0.1:49999/health").stdout == '"OK"'


def test_kill_during_a_long_cell_reports_the_sandbox_killed(e2b_server) -> None:
    sandbox = Sandbox.create()
    try:
        kill_during_a_long_cell(sandbox)
    finally:
        Sandbox.kill(sandbox.sandbox_id)


async def test_kill_during_a_long_cell_async(e2b_server) -> None:
    sandbox = await AsyncSandbox.create()
    started = asyncio.Event()

    async def kill_when_started() -> None:
        await asyncio.wait_for(started.wait(), 60)
        await sandbox.kill()

    killer = asyncio.create_task(kill_when_started())
    try:
        with pytest.raises(TimeoutException, match="killed while the request was in progress"):
            await sandbox.run_code("print('started', flush=True)\nimport time\ntime.sleep(60)",
                                   on_stdout=lambda _msg: started.set(), timeout=90)
    finally:
        await killer
        await AsyncSandbox.kill(sandbox.sandbox_id)


JS_SMOKE = """
const { Sandbox } = require('@e2b/code-interpreter');
(async () => {
  const sbx = await Sandbox.create();
  try {
    const contexts = await sbx.listCodeContexts();
    const run = await sbx.runCode('21 * 2');
    console.log(JSON.stringify({ languages: contexts.map(c => c.language).sort(), text: run.text }));
  } finally {
    await sbx.kill();
  }
})().catch(e => { console.error(e); process.exit(1); });
"""


def test_js_sdk_smoke(e2b_server) -> None:
    assert run_js(JS_SMOKE, e2b_server.env) == {"languages": ["javascript", "python"], "text": "42"}
