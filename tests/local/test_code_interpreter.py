"""The code interpreter through the real SDK (`e2b_code_interpreter.Sandbox`): run_code in every language,
every result format, streaming callbacks, env vars, contexts, timeouts and dying kernels."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from e2b import NotFoundException, SandboxException, TimeoutException
from e2b_code_interpreter import Sandbox
from e2b_code_interpreter.charts import ChartType, LineChart

# A 1x1 PNG and JPEG, for display formats that need real image data.
PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
JPEG_1PX = base64.b64encode(b"\xff\xd8\xff\xe0 not a real jpeg, only its MIME type matters here \xff\xd9").decode()


@pytest.fixture(scope="module")
def sbx(e2b_server) -> Sandbox:
    sandbox = Sandbox.create(envs={"SANDBOX_LEVEL": "from-create", "SHARED_NAME": "sandbox"})
    yield sandbox
    sandbox.kill()


# -- Python: state, results, errors ----------------------------------------------------------------
def test_state_is_kept_between_runs(sbx: Sandbox) -> None:
    first = sbx.run_code("counter = 41")
    second = sbx.run_code("counter += 1\ncounter")
    assert first.error is None and first.results == []
    assert second.text == "42"
    assert second.results[0].is_main_result
    assert second.execution_count == first.execution_count + 1


def test_stdout_stderr_and_error_lines(sbx: Sandbox) -> None:
    execution = sbx.run_code("import sys\nprint('out')\nprint('err', file=sys.stderr)\n1/0")
    assert execution.logs.stdout == ["out\n"]
    assert execution.logs.stderr == ["err\n"]
    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "ZeroDivisionError" in execution.error.traceback
    assert "\x1b[" not in execution.error.traceback  # plain text, as E2B's template configures
    assert sbx.run_code("'still fine'").text == "still fine"


def test_string_result_loses_its_quotes(sbx: Sandbox) -> None:
    assert sbx.run_code("'hello'").text == "hello"
    assert sbx.run_code("\"it's\"").text == "\"it's\""


def test_every_display_format(sbx: Sandbox) -> None:
    bundle = {
        "text/plain": "plain", "text/html": "<b>html</b>", "text/markdown": "# markdown",
        "image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png": PNG_1PX, "image/jpeg": JPEG_1PX,
        "application/pdf": "JVBERi0xLjQK", "text/latex": "$x^2$", "application/json": {"key": [1, 2]},
        "application/javascript": "console.log(1)", "application/x-custom": {"anything": True},
    }
    execution = sbx.run_code(f"from IPython.display import display\ndisplay({bundle!r}, raw=True)\n7")
    assert len(execution.results) == 2
    shown, main = execution.results
    assert not shown.is_main_result and main.is_main_result and main.text == "7"
    assert shown.text == "plain" and shown.html == "<b>html</b>" and shown.markdown == "# markdown"
    assert shown.svg.startswith("<svg") and shown.png == PNG_1PX and shown.jpeg == JPEG_1PX
    assert shown.pdf == "JVBERi0xLjQK" and shown.latex == "$x^2$" and shown.json == {"key": [1, 2]}
    assert shown.javascript == "console.log(1)"
    assert shown.extra == {"application/x-custom": {"anything": True}}
    assert set(shown.formats()) == {"text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json",
                                    "javascript", "application/x-custom"}


def test_rich_objects_of_ipython(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "from IPython.display import HTML, Markdown, Latex, SVG, display\n"
        "display(HTML('<i>x</i>'), Markdown('*m*'), Latex('$y$'))\n"
        "SVG(\"<svg xmlns='http://www.w3.org/2000/svg'></svg>\")"
    )
    html, markdown, latex, svg = execution.results
    assert html.html == "<i>x</i>" and markdown.markdown == "*m*" and latex.latex == "$y$"
    assert svg.is_main_result and svg.svg.startswith("<svg")


def test_plain_dicts_and_lists_have_json(sbx: Sandbox) -> None:
    execution = sbx.run_code("import numpy as np\n{'a': 1, 'b': [1.5, None], 'n': np.int64(3), 'nan': float('nan')}")
    assert execution.results[0].json == {"a": 1, "b": [1.5, None], "n": 3, "nan": None}
    assert execution.text.startswith("{'a': 1")


def test_dataframe_has_data(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import pandas as pd\n"
        "pd.DataFrame({'name': ['a', 'b'], 'value': [1, 2], 'when': pd.to_datetime(['2024-01-01', None])})"
    )
    result = execution.results[0]
    assert result.is_main_result
    assert result.data == {"name": ["a", "b"], "value": [1, 2], "when": ["2024-01-01T00:00:00", None]}
    assert "<table" in result.html
    assert "name" in result.text


def test_matplotlib_chart_on_show(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [2, 4, 8], label='growth')\n"
        "plt.title('Growth'); plt.xlabel('time (s)'); plt.ylabel('size')\n"
        "plt.show()"
    )
    assert execution.error is None
    [result] = execution.results
    assert not result.is_main_result
    assert base64.b64decode(result.png).startswith(b"\x89PNG")
    chart = result.chart
    assert isinstance(chart, LineChart) and chart.type == ChartType.LINE
    assert chart.title == "Growth" and chart.x_label == "time (s)" and chart.x_unit == "s"
    assert [tuple(p) for p in chart.elements[0].points] == [(1, 2), (2, 4), (3, 8)]


def test_matplotlib_figure_as_last_expression(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.bar(['a', 'b'], [3, 5])\nfig"
    )
    main = [r for r in execution.results if r.is_main_result]
    assert len(main) == 1
    assert main[0].png and main[0].chart is not None and main[0].chart.type == ChartType.BAR
    assert {e.label: e.value for e in main[0].chart.elements} == {"a": 3, "b": 5}


def test_pillow_save_displays_the_image(sbx: Sandbox) -> None:
    execution = sbx.run_code("from PIL import Image\nImage.new('RGB', (2, 2), 'red').save('/tmp/red.png')")
    assert len(execution.results) == 1 and execution.results[0].png


def test_user_site_packages_importable_without_restart(sbx: Sandbox) -> None:
    site_dir = sbx.commands.run("python3 -c 'import site; print(site.getusersitepackages())'").stdout.strip()
    sbx.files.write(f"{site_dir}/late_module_e2b.py", "VALUE = 'installed later'\n")
    assert sbx.run_code("import late_module_e2b\nlate_module_e2b.VALUE").text == "installed later"


def test_a_new_context_has_the_user_site_directory_on_its_path(sbx: Sandbox) -> None:
    # A fresh Python puts the user's site directory on its path when it exists as it starts.
    site_dir = sbx.commands.run("python3 -c 'import site; print(site.getusersitepackages())'").stdout.strip()
    sbx.commands.run(f"mkdir -p {site_dir}")
    context = sbx.create_code_context()
    try:
        assert sbx.run_code("import site, sys\nsite.getusersitepackages() in sys.path", context=context).text == "True"
    finally:
        sbx.remove_code_context(context)


def test_pythonpath_of_the_sandbox_reaches_a_new_context(e2b_server) -> None:
    # Read as a Python starts: a kernel whose environment has it is started afresh, not forked.
    sandbox = Sandbox.create(envs={"PYTHONPATH": "/tmp/extra-path"})
    try:
        sandbox.files.write("/tmp/extra-path/extra_path_module_e2b.py", "VALUE = 'on PYTHONPATH'\n")
        context = sandbox.create_code_context()
        execution = sandbox.run_code("import extra_path_module_e2b\nextra_path_module_e2b.VALUE", context=context)
        assert execution.text == "on PYTHONPATH", execution.error
    finally:
        sandbox.kill()


def test_runs_as_default_user_in_home(sbx: Sandbox) -> None:
    assert sbx.run_code("import os, getpass\n(getpass.getuser(), os.getcwd())").text == "('user', '/home/user')"


# -- streaming ---------------------------------------------------------------------------------------
def test_callbacks_fire_while_the_code_runs(sbx: Sandbox) -> None:
    seen: list[tuple[str, float]] = []
    results = []
    errors = []
    started = time.monotonic()
    execution = sbx.run_code(
        "import sys, time\nprint('first', flush=True)\ntime.sleep(1.5)\n"
        "print('late', file=sys.stderr, flush=True)\ndisplay('shown')\nraise ValueError('bad')",
        on_stdout=lambda m: seen.append((m.line, time.monotonic() - started)),
        on_stderr=lambda m: seen.append((m.line, time.monotonic() - started)),
        on_result=results.append, on_error=errors.append,
    )
    finished = time.monotonic() - started
    assert [line for line, _ in seen] == ["first\n", "late\n"]
    assert seen[0][1] < finished - 1.0  # arrived during the sleep, not at the end
    assert isinstance(seen[0][1], float)
    assert [r.text for r in results] == ["shown"]
    assert errors and errors[0].name == "ValueError" and execution.error.value == "bad"


def test_output_timestamps_are_iso_strings(sbx: Sandbox) -> None:
    stamps = []
    sbx.run_code("print('x')", on_stdout=lambda m: stamps.append(m.timestamp))
    assert len(stamps) == 1 and isinstance(stamps[0], str) and stamps[0].endswith("Z")


def test_output_written_as_the_cell_ends_is_never_lost(sbx: Sandbox) -> None:
    # The template's kernels reply without ipykernel's half-millisecond pause after the last flush
    # (ipython_kernel_config.py) and skip flushes with nothing written (ipython_startup.py): every
    # output must still reach the execution it belongs to.
    assert sbx.run_code("get_ipython().kernel._execute_sleep").text == "0.0"
    for i in range(40):
        execution = sbx.run_code(f"import sys\nprint({i}, end='')\nsys.stderr.write('e{i}')\n{i} * 2")
        assert execution.logs.stdout == [str(i)] and execution.logs.stderr == [f"e{i}"], execution
        assert execution.text == str(i * 2)
    # Written by another thread, and by a forked child of the kernel's process.
    threaded = sbx.run_code("import threading\nt = threading.Thread(target=lambda: print('from a thread', end=''))\n"
                            "t.start(); t.join()")
    assert threaded.logs.stdout == ["from a thread"]
    forked = sbx.run_code("import os\npid = os.fork()\nif pid == 0:\n    print('from a child', flush=True)\n"
                          "    os._exit(0)\nos.waitpid(pid, 0); None")
    assert "".join(forked.logs.stdout) == "from a child\n", forked  # a child's writes go out one by one
    for i in range(10):
        execution = sbx.run_code(f"echo -n {i}; echo -n e{i} >&2", language="bash")
        assert "".join(execution.logs.stdout) == str(i) and "".join(execution.logs.stderr) == f"e{i}", execution


# -- other languages ---------------------------------------------------------------------------------
def test_javascript(sbx: Sandbox) -> None:
    assert sbx.run_code("const base = 40; console.log('log line'); base + 2", language="javascript").text == "42"
    again = sbx.run_code("base * 2", language="js")
    assert again.text == "80" and again.error is None
    assert sbx.run_code("'a string'", language="js").text == "a string"
    failed = sbx.run_code("throw new Error('boom')", language="js")
    assert failed.error is not None and failed.error.name == "Error" and failed.error.value == "boom"
    logs = sbx.run_code("console.log('out'); console.error('err')", language="js").logs
    assert logs.stdout == ["out\n"] and logs.stderr == ["err\n"]


def test_typescript_top_level_await_and_modules(sbx: Sandbox) -> None:
    sbx.files.write("/home/user/greet.ts", "export function greet(name: string): string { return `hi ${name}`; }\n")
    typed = sbx.run_code("const n: number = 5; n * 3", language="typescript")
    assert typed.text == "15"
    awaited = sbx.run_code("await new Promise((r) => setTimeout(r, 50)); 'awaited'", language="ts")
    assert awaited.text == "awaited"
    imported = sbx.run_code("import { join } from 'node:path';\nimport { greet } from './greet.ts';\n"
                            "greet(join('a', 'b'))", language="ts")
    assert imported.error is None and imported.text == "hi a/b"


def test_bash(sbx: Sandbox) -> None:
    first = sbx.run_code("cd /tmp && WORD=persisted && echo hello", language="bash")
    assert first.logs.stdout == ["hello\n"] and first.error is None
    second = sbx.run_code("pwd; echo $WORD; echo oops >&2", language="bash")
    assert "".join(second.logs.stdout) == "/tmp\npersisted\n" and second.logs.stderr == ["oops\n"]
    failed = sbx.run_code("ls /does-not-exist", language="bash")
    assert failed.error is not None and failed.error.name == "ExitCodeError" and failed.error.value == "2"
    assert "No such file" in "".join(failed.logs.stderr)
    assert sbx.run_code("echo $(( 6 * 7 ))", language="bash").logs.stdout == ["42\n"]


def test_unknown_language_names_the_supported_ones(sbx: Sandbox) -> None:
    with pytest.raises(SandboxException) as info:
        sbx.run_code("1", language="cobol")
    message = str(info.value)
    assert "Failed to create context" in message and "cobol" in message
    assert all(name in message for name in ("python", "javascript", "typescript", "bash"))


# -- environment variables ---------------------------------------------------------------------------
@pytest.mark.parametrize(("language", "read"), [
    ("python", "import os; print(os.environ.get('{}', 'unset'))"),
    ("javascript", "console.log(Deno.env.get('{}') ?? 'unset')"),
    ("bash", "echo ${{{}:-unset}}"),
])
def test_env_vars(sbx: Sandbox, language: str, read: str) -> None:
    def value(name: str, envs: dict[str, str] | None = None) -> str:
        execution = sbx.run_code(read.format(name), language=language, envs=envs)
        assert execution.error is None, execution.error
        return "".join(execution.logs.stdout).strip()

    assert value("SANDBOX_LEVEL") == "from-create"
    assert value("PER_RUN", {"PER_RUN": "only now"}) == "only now"
    assert value("PER_RUN") == "unset"
    assert value("SHARED_NAME", {"SHARED_NAME": "override"}) == "override"
    assert value("SHARED_NAME") == "sandbox"


def test_env_vars_reach_subprocesses(sbx: Sandbox) -> None:
    execution = sbx.run_code("import subprocess\nsubprocess.run(['sh', '-c', 'echo $PER_RUN $SANDBOX_LEVEL'])",
                             envs={"PER_RUN": "child"})
    assert "child from-create" in "".join(execution.logs.stdout)


# -- contexts ----------------------------------------------------------------------------------------
def test_contexts_create_list_restart_remove(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(cwd="/tmp")
    assert ctx.language == "python" and ctx.cwd == "/tmp" and ctx.id
    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    sbx.run_code("isolated = 1", context=ctx)
    assert sbx.run_code("isolated", context=ctx).text == "1"
    assert sbx.run_code("'isolated' in globals()").text == "False"  # the default context is another kernel
    listed = {c.id: c for c in sbx.list_code_contexts()}
    assert ctx.id in listed and listed[ctx.id].cwd == "/tmp"
    assert "python" in {c.language for c in listed.values() if c.id != ctx.id}  # the default context too

    sbx.restart_code_context(ctx)
    restarted = sbx.run_code("'isolated' in globals(), __import__('os').getcwd()", context=ctx)
    assert restarted.text == "(False, '/tmp')"

    sbx.remove_code_context(ctx.id)
    assert ctx.id not in {c.id for c in sbx.list_code_contexts()}
    with pytest.raises(NotFoundException):
        sbx.run_code("1", context=ctx)
    with pytest.raises(NotFoundException):
        sbx.restart_code_context(ctx)


@pytest.mark.parametrize(("language", "code"), [("bash", "pwd"), ("typescript", "console.log(Deno.cwd())")])
def test_context_cwd_in_other_languages(sbx: Sandbox, language: str, code: str) -> None:
    ctx = sbx.create_code_context(cwd="/var", language=language)
    try:
        assert ctx.language == language
        assert sbx.run_code(code, context=ctx).logs.stdout == ["/var\n"]
    finally:
        sbx.remove_code_context(ctx)


def test_context_errors(sbx: Sandbox) -> None:
    with pytest.raises(SandboxException, match="does not exist"):
        sbx.create_code_context(cwd="/no/such/dir")
    with pytest.raises(SandboxException, match="not supported"):
        sbx.create_code_context(language="fortran")


def test_executions_of_a_context_run_one_at_a_time(sbx: Sandbox) -> None:
    outputs: list[str] = []

    def run(tag: str) -> None:
        execution = sbx.run_code(f"import time\nprint('{tag} start', flush=True)\ntime.sleep(0.3)\nprint('{tag} end')")
        outputs.extend(execution.logs.stdout)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = "".join(outputs)
    assert text in ("a start\na end\nb start\nb end\n", "b start\nb end\na start\na end\n")


# -- interrupts and dying kernels --------------------------------------------------------------------
def test_timeout_interrupts_and_keeps_the_kernel(sbx: Sandbox) -> None:
    sbx.run_code("survivor = 'kept'")
    # The cell never ends by itself: only the timeout can end the call.
    with pytest.raises(TimeoutException):
        sbx.run_code("import time\nwhile True: time.sleep(0.05)", timeout=1)
    after = sbx.run_code("survivor")
    assert after.text == "kept"  # interrupted, not restarted


def test_timeout_in_bash_and_javascript(sbx: Sandbox) -> None:
    sbx.run_code("KEPT=yes", language="bash")
    with pytest.raises(TimeoutException):
        sbx.run_code("sleep 30", language="bash", timeout=1)
    assert sbx.run_code("echo $KEPT", language="bash").logs.stdout == ["yes\n"]
    sbx.run_code("globalThis.kept = 'yes'", language="javascript")
    with pytest.raises(TimeoutException):
        sbx.run_code("while (true) {}", language="javascript", timeout=1)
    assert sbx.run_code("globalThis.kept", language="javascript").text == "yes"


def test_killed_kernel_reports_and_is_replaced(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context()
    try:
        sbx.run_code("doomed = True", context=ctx)
        killed = sbx.run_code("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", context=ctx)
        assert killed.error is not None and killed.error.name == "ContextRestarting"
        assert "SIGKILL" in killed.error.value
        fresh = sbx.run_code("'doomed' in globals()", context=ctx)
        assert fresh.error is None and fresh.text == "False"
    finally:
        sbx.remove_code_context(ctx)


def test_out_of_memory_kernel(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context()
    try:
        # Several times the sandbox's memory limit, written to so that the pages are really used.
        oom = sbx.run_code("import numpy as np\nhog = np.ones(600_000_000)", context=ctx, timeout=120)
        assert oom.error is not None and oom.error.name == "ContextRestarting", oom.error
        assert sbx.run_code("1 + 1", context=ctx).text == "2"
    finally:
        sbx.remove_code_context(ctx)


def test_run_code_outside_the_code_interpreter_template(e2b_server) -> None:
    sandbox = Sandbox.create("base")
    try:
        with pytest.raises(SandboxException, match="not installed"):
            sandbox.run_code("1")
    finally:
        sandbox.kill()
