"""R and Java in the code interpreter, and the data-science versions of E2B's template, through the real SDK.

R runs on IRkernel and Java on JJava (IJava's maintained successor), as E2B's template runs them on
IRkernel and IJava; both start on first use only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from conftest import run_js
from e2b import TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def shown(execution) -> str | None:
    """The text of an execution's one result: IRkernel displays R values (no main result), as on E2B."""
    assert execution.error is None, execution.error
    assert len(execution.results) == 1
    return execution.results[0].text


@pytest.fixture(scope="module")
def sbx(e2b_server) -> Iterator[Sandbox]:
    # The module's tests start R and Java kernels, which takes minutes on a busy machine: past E2B's
    # default sandbox timeout of 300 s.
    sandbox = Sandbox.create(envs={"SANDBOX_WIDE": "everywhere"}, timeout=1800)
    yield sandbox
    sandbox.kill()


def _processes(sandbox: Sandbox) -> list[str]:
    return sandbox.commands.run("ps -eo comm=", user="root").stdout.split()


def test_r_and_java_start_only_on_first_use(e2b_server) -> None:
    sandbox = Sandbox.create()
    try:
        assert sandbox.run_code("1 + 1").text == "2"
        running = _processes(sandbox)
        assert "java" not in running and "R" not in running
        assert shown(sandbox.run_code("1 + 1", language="r")) == "[1] 2"
        assert "R" in _processes(sandbox)
        assert "java" not in _processes(sandbox)
    finally:
        sandbox.kill()


def test_r_outputs_state_and_errors(sbx: Sandbox) -> None:
    stdout: list[str] = []
    execution = sbx.run_code('x <- 40\ncat("to stdout\\n")\nmessage("to stderr")\nx + 2', language="r",
                             on_stdout=lambda msg: stdout.append(msg.line))
    assert shown(execution) == "[1] 42"
    assert execution.results[0].is_main_result is False
    assert execution.logs.stdout == ["to stdout\n"] and stdout == ["to stdout\n"]
    assert "".join(execution.logs.stderr).strip() == "to stderr"
    assert shown(sbx.run_code("x * 2", language="r")) == "[1] 80"  # the default R context keeps its state
    failed = sbx.run_code('stop("boom")', language="r")
    assert failed.error is not None
    assert failed.error.name == "ERROR"
    assert failed.error.value.strip() == "Error in eval(expr, envir, enclos): boom"
    assert 'stop("boom")' in failed.error.traceback
    assert shown(sbx.run_code("x", language="r")) == "[1] 40"


def test_r_plot_is_an_image(sbx: Sandbox) -> None:
    execution = sbx.run_code("plot(1:10)", language="r")
    assert execution.error is None
    images = [r for r in execution.results if r.png]
    assert len(images) == 1
    assert base64.b64decode(images[0].png).startswith(PNG_MAGIC)
    assert images[0].text == "plot without title"


def test_r_context_cwd_and_env_vars(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(cwd="/tmp", language="r")
    assert (ctx.language, ctx.cwd) == ("r", "/tmp")
    assert shown(sbx.run_code("getwd()", context=ctx)) == '[1] "/tmp"'
    assert shown(sbx.run_code('Sys.getenv("SANDBOX_WIDE")', context=ctx)) == '[1] "everywhere"'
    with_env = sbx.run_code('Sys.getenv("ONLY_NOW")', context=ctx, envs={"ONLY_NOW": 'it\'s "here"'})
    assert shown(with_env) == '[1] "it\'s \\"here\\""'
    assert shown(sbx.run_code('Sys.getenv("ONLY_NOW", "unset")', context=ctx)) == '[1] "unset"'
    overridden = sbx.run_code('Sys.getenv("SANDBOX_WIDE")', context=ctx, envs={"SANDBOX_WIDE": "now"})
    assert shown(overridden) == '[1] "now"'
    assert shown(sbx.run_code('Sys.getenv("SANDBOX_WIDE")', context=ctx)) == '[1] "everywhere"'
    sbx.remove_code_context(ctx)


def test_java_outputs_state_and_errors(sbx: Sandbox) -> None:
    execution = sbx.run_code('int a = 40;\nSystem.out.println("to stdout");\nSystem.err.println("to stderr");\na + 2',
                             language="java")
    assert execution.error is None
    assert execution.text == "42"
    assert "".join(execution.logs.stdout) == "to stdout\n"
    assert "".join(execution.logs.stderr) == "to stderr\n"
    assert sbx.run_code("a * 2", language="java").text == "80"
    thrown = sbx.run_code('throw new IllegalStateException("boom");', language="java")
    # JJava's report: the exception's class and message in the value, its stack in the traceback.
    assert thrown.error is not None
    assert thrown.error.name == "RuntimeException"
    assert thrown.error.value == "java.lang.IllegalStateException, boom"
    assert "java.lang.IllegalStateException: boom" in thrown.error.traceback
    not_java = sbx.run_code("int b = ;", language="java")
    assert not_java.error is not None
    assert not_java.error.name == "CompilationException"
    assert "illegal start of expression" in not_java.error.traceback
    assert sbx.run_code("a", language="java").text == "40"


def test_java_context_cwd_and_env_vars(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(cwd="/tmp", language="java")
    assert (ctx.language, ctx.cwd) == ("java", "/tmp")
    assert sbx.run_code('System.getProperty("user.dir")', context=ctx).text == "/tmp"
    assert sbx.run_code("new java.io.File(\"x\").getAbsolutePath()", context=ctx).text == "/tmp/x"
    assert sbx.run_code('System.getenv("SANDBOX_WIDE")', context=ctx).text == "everywhere"
    # As on E2B, env vars are also system properties of the JVM: the sandbox's always, a request's
    # while its code runs.
    assert sbx.run_code('System.getProperty("SANDBOX_WIDE")', context=ctx).text == "everywhere"
    with_env = sbx.run_code('System.getProperty("ONLY_NOW")', context=ctx, envs={"ONLY_NOW": 'say "hi"\\'})
    assert with_env.text == 'say "hi"\\'
    assert sbx.run_code('System.getProperty("ONLY_NOW", "default")', context=ctx).text == "default"
    overridden = sbx.run_code('System.getProperty("SANDBOX_WIDE")', context=ctx, envs={"SANDBOX_WIDE": "now"})
    assert overridden.text == "now"
    assert sbx.run_code('System.getProperty("SANDBOX_WIDE")', context=ctx).text == "everywhere"
    listed = {c.id: c.language for c in sbx.list_code_contexts()}
    assert listed[ctx.id] == "java"
    sbx.remove_code_context(ctx)


@pytest.mark.parametrize(("language", "keep", "sleep", "kept", "answer"), [
    ("r", "kept <- 7", "Sys.sleep(600)", "kept", "[1] 7"),
    ("java", "int kept = 7;", "Thread.sleep(600_000);", "kept", "7"),
])
def test_a_timed_out_cell_is_interrupted_and_the_state_kept(e2b_server, language: str, keep: str, sleep: str,
                                                           kept: str, answer: str) -> None:
    sandbox = Sandbox.create()
    try:
        ctx = sandbox.create_code_context(language=language)
        assert sandbox.run_code(keep, context=ctx).error is None
        with pytest.raises(TimeoutException):
            sandbox.run_code(sleep, context=ctx, timeout=5)
        # The kernel was interrupted, not replaced: what the context held is still there.
        after = sandbox.run_code(kept, context=ctx)
        assert after.error is None
        assert (after.text or after.results[0].text) == answer
    finally:
        sandbox.kill()


async def test_r_and_java_async(e2b_server) -> None:
    sandbox = await AsyncSandbox.create()
    try:
        ctx = await sandbox.create_code_context(language="r")
        assert shown(await sandbox.run_code("paste('a', 'b')", context=ctx)) == '[1] "a b"'
        java = await sandbox.run_code('String s = "x".repeat(3);\ns', language="java")
        assert java.error is None and java.text == "xxx"
        failed = await sandbox.run_code("1 / 0", language="java")
        assert failed.error is not None and failed.error.value == "java.lang.ArithmeticException, / by zero"
    finally:
        await sandbox.kill()


def test_data_science_versions_are_those_of_e2b_template(sbx: Sandbox) -> None:
    code = ("import importlib.metadata as m, json\n"
            "json.dumps({p: m.version(p) for p in ('ipykernel', 'ipython', 'numpy', 'pandas', 'matplotlib')})")
    versions = json.loads(sbx.run_code(code).text)
    assert versions == {"ipykernel": "7.4.0", "ipython": "9.18.1", "numpy": "2.3.5", "pandas": "2.2.3",
                        "matplotlib": "3.10.9"}


def test_boxplot_with_labels_gives_a_box_and_whisker_chart(sbx: Sandbox) -> None:
    code = """
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
# `labels=` (renamed `tick_labels` in matplotlib 3.9, gone in 3.11) as E2B's own chart tests use it;
# e2b_charts recognises the boxes drawn as patches.
ax.boxplot([[1, 2, 3, 4, 5], [2, 4, 6, 8, 10]], labels=["small", "large"], patch_artist=True)
ax.set_title("Boxes")
ax.set_xlabel("Group")
plt.show()
"""
    execution = sbx.run_code(code)
    assert execution.error is None
    charts = [r.chart for r in execution.results if r.chart is not None]
    assert len(charts) == 1
    assert charts[0].type.value == "box_and_whisker"
    assert (charts[0].title, charts[0].x_label) == ("Boxes", "Group")
    assert [(e.label, e.median) for e in charts[0].elements] == [("small", 3.0), ("large", 6.0)]


JS_SMOKE = """
const { Sandbox } = require('@e2b/code-interpreter');
(async () => {
  const sbx = await Sandbox.create();
  try {
    const r = await sbx.runCode('v <- c(1, 2, 3)\\nsum(v)', { language: 'r' });
    const ctx = await sbx.createCodeContext({ language: 'java', cwd: '/tmp' });
    const java = await sbx.runCode('System.getProperty("user.dir")', { context: ctx });
    const error = await sbx.runCode('stop("no")', { language: 'r' });
    console.log(JSON.stringify({ r: r.results[0].text, java: java.text, error: error.error && error.error.name }));
  } finally {
    await sbx.kill();
  }
})().catch(e => { console.error(e); process.exit(1); });
"""


def test_js_sdk_runs_r_and_java(e2b_server) -> None:
    assert run_js(JS_SMOKE, e2b_server.env, timeout=300) == {"r": "[1] 6", "java": "/tmp", "error": "ERROR"}
