"""The code interpreter through the real asynchronous SDK (`e2b_code_interpreter.AsyncSandbox`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from e2b import NotFoundException, SandboxException, TimeoutException
from e2b_code_interpreter import AsyncSandbox, OutputMessage


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def asbx(e2b_server) -> AsyncIterator[AsyncSandbox]:
    sandbox = await AsyncSandbox.create(envs={"ASYNC_LEVEL": "sandbox"})
    yield sandbox
    await sandbox.kill()


async def test_state_results_and_errors(asbx: AsyncSandbox) -> None:
    await asbx.run_code("import math\nradius = 2")
    area = await asbx.run_code("round(math.pi * radius ** 2, 2)")
    assert area.text == "12.57" and area.results[0].is_main_result
    failed = await asbx.run_code("undefined_name")
    assert failed.error is not None and failed.error.name == "NameError"


async def test_async_callbacks_stream_live(asbx: AsyncSandbox) -> None:
    arrivals: list[tuple[str, float]] = []
    started = time.monotonic()

    async def on_stdout(message: OutputMessage) -> None:
        arrivals.append((message.line, time.monotonic() - started))

    results = []
    execution = await asbx.run_code(
        "import time\nprint('early', flush=True)\ntime.sleep(1.2)\nprint('late')\n'done'",
        on_stdout=on_stdout, on_result=results.append,
    )
    total = time.monotonic() - started
    assert [line for line, _ in arrivals] == ["early\n", "late\n"]
    assert arrivals[0][1] < total - 0.8
    assert execution.text == "done" and results[0].text == "done"


async def test_dataframe_and_chart(asbx: AsyncSandbox) -> None:
    execution = await asbx.run_code(
        "import pandas as pd, matplotlib.pyplot as plt\n"
        "df = pd.DataFrame({'x': [1, 2, 3], 'y': [3, 1, 2]})\n"
        "df.plot(x='x', y='y', kind='scatter', title='points')\nplt.show()\ndf"
    )
    chart = next(r for r in execution.results if not r.is_main_result)
    table = next(r for r in execution.results if r.is_main_result)
    assert chart.png and chart.chart is not None and chart.chart.type.value == "scatter"
    assert chart.chart.title == "points"
    assert table.data == {"x": [1, 2, 3], "y": [3, 1, 2]}


async def test_languages(asbx: AsyncSandbox) -> None:
    js, ts, bash = await asyncio.gather(
        asbx.run_code("[1, 2, 3].map((n) => n * 2).join(',')", language="js"),
        asbx.run_code("const answer: number = await Promise.resolve(42); answer", language="ts"),
        asbx.run_code("echo $ASYNC_LEVEL", language="bash"),
    )
    assert js.text == "2,4,6"
    assert ts.text == "42"
    assert bash.logs.stdout == ["sandbox\n"]


async def test_env_vars(asbx: AsyncSandbox) -> None:
    code = "import os; print(os.environ.get('ASYNC_RUN', 'unset'), os.environ['ASYNC_LEVEL'])"
    assert (await asbx.run_code(code, envs={"ASYNC_RUN": "set"})).logs.stdout == ["set sandbox\n"]
    assert (await asbx.run_code(code)).logs.stdout == ["unset sandbox\n"]


async def test_contexts(asbx: AsyncSandbox) -> None:
    ctx = await asbx.create_code_context(cwd="/tmp", language="python")
    await asbx.run_code("value = 'in context'", context=ctx)
    assert (await asbx.run_code("value", context=ctx)).text == "in context"
    assert ctx.id in {c.id for c in await asbx.list_code_contexts()}
    await asbx.restart_code_context(ctx.id)
    assert (await asbx.run_code("import os; os.getcwd()", context=ctx)).text == "/tmp"
    await asbx.remove_code_context(ctx)
    with pytest.raises(NotFoundException):
        await asbx.run_code("1", context=ctx)


async def test_timeout_then_usable(asbx: AsyncSandbox) -> None:
    await asbx.run_code("kept = 1")
    with pytest.raises(TimeoutException):
        await asbx.run_code("import time; time.sleep(60)", timeout=1)
    assert (await asbx.run_code("kept + 1")).text == "2"


async def test_killed_kernel(asbx: AsyncSandbox) -> None:
    ctx = await asbx.create_code_context()
    died = await asbx.run_code("import os; os._exit(3)", context=ctx)
    assert died.error is not None and died.error.name == "ContextRestarting" and "code 3" in died.error.value
    assert (await asbx.run_code("40 + 2", context=ctx)).text == "42"
    await asbx.remove_code_context(ctx)


async def test_unsupported_language(asbx: AsyncSandbox) -> None:
    with pytest.raises(SandboxException, match="supported languages"):
        await asbx.run_code("1", language="cobol")
