"""Every numbered gotcha of SKILL.md, shown against e2b-local: the wrong way fails as the gotcha says and
the right way works. Gotchas about E2B cloud features check their SDK calls against the installed SDK.
"""

from __future__ import annotations

import base64
import inspect
import re
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import e2b
import pytest
from e2b import CommandExitException, Sandbox, SandboxQuery, SandboxState
from e2b_code_interpreter import Sandbox as CodeSandbox

from .snippets import SKILL_MD

# Bound for a sandbox whose short timeout was set to end (the server checks expiries about once a second).
EXPIRY_WAIT_S = 60
# Bound for the first metrics sample (E2B and e2b-local sample every 5 s).
METRICS_WAIT_S = 30
# Sandbox lifetime of the tests that do not test timeouts: long enough for every step of one test.
SANDBOX_TIMEOUT_S = 600
# A PNG file's first bytes.
PNG_MAGIC = b"\x89PNG"


def gotcha_numbers() -> list[int]:
    """The numbers of SKILL.md's gotcha list."""
    section = SKILL_MD.read_text().split("## Gotchas", 1)[1].split("\n## ", 1)[0]
    return [int(n) for n in re.findall(r"^(\d+)\. \*\*", section, re.MULTILINE)]


def wait_until(check: Callable[[], bool], seconds: float) -> bool:
    """Poll `check` until it holds or the deadline passes; whether it held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()


def listed_ids(query: SandboxQuery | None = None) -> set[str]:
    """IDs of every sandbox the backend lists for this query, all pages."""
    paginator = Sandbox.list(query=query)
    ids: set[str] = set()
    while paginator.has_next:
        ids.update(s.sandbox_id for s in paginator.next_items())
    return ids


@pytest.fixture
def code_sbx(e2b_server) -> Iterator[CodeSandbox]:
    """A fresh code-interpreter sandbox, killed after the test."""
    sbx = CodeSandbox.create(timeout=SANDBOX_TIMEOUT_S)
    try:
        yield sbx
    finally:
        sbx.kill()


def test_every_gotcha_has_a_test_here() -> None:
    numbers = gotcha_numbers()
    assert numbers == list(range(1, len(numbers) + 1))
    tested = {int(m) for m in re.findall(r"^def test_gotcha_(\d+)_", Path(__file__).read_text(), re.MULTILINE)}
    assert tested == set(numbers)


def test_gotcha_1_create_not_the_constructor(e2b_server) -> None:
    with pytest.raises(TypeError):
        Sandbox()
    with pytest.raises(TypeError):
        Sandbox(timeout=300)
    with Sandbox.create() as sbx:
        sandbox_id = sbx.sandbox_id
        assert sandbox_id in listed_ids()
    assert sandbox_id not in listed_ids()  # the with block killed it


def test_gotcha_2_the_right_class(e2b_server) -> None:
    with Sandbox.create() as plain:
        assert not hasattr(plain, "run_code")
        assert plain.commands.run("echo ok").stdout == "ok\n"
    with CodeSandbox.create() as code:
        assert code.get_info().template_id.startswith("code-interpreter") or code.get_info().name == (
            "code-interpreter-v1"
        )
        assert code.run_code("6 * 7").text == "42"


def test_gotcha_3_the_timeout_kills(e2b_server) -> None:
    with Sandbox.create() as sbx:
        info = sbx.get_info()
        assert round((info.end_at - info.started_at).total_seconds()) == 300  # the default lifetime
        sbx.commands.run("true")  # activity does not extend the lifetime
        assert round((sbx.get_info().end_at - info.started_at).total_seconds()) == 300
    short = Sandbox.create(timeout=SANDBOX_TIMEOUT_S)
    short.files.write("work.txt", "unsaved")
    short.set_timeout(2)  # counts from now and may shorten the lifetime
    assert wait_until(lambda: short.sandbox_id not in listed_ids(), EXPIRY_WAIT_S)
    assert Sandbox.kill(short.sandbox_id) is False  # killed, files and all
    kept = Sandbox.create(timeout=2, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        kept.files.write("work.txt", "saved")
        assert wait_until(lambda: Sandbox.get_info(kept.sandbox_id).state == SandboxState.PAUSED, EXPIRY_WAIT_S)
        resumed = Sandbox.connect(kept.sandbox_id, timeout=SANDBOX_TIMEOUT_S)
        assert resumed.files.read("work.txt") == "saved"
    finally:
        Sandbox.kill(kept.sandbox_id)


def test_gotcha_4_seconds_in_python(sandbox) -> None:
    with pytest.raises(e2b.TimeoutException):
        sandbox.commands.run("sleep 30", timeout=1)  # one second, not one millisecond
    assert sandbox.commands.run("sleep 0.1 && echo done", timeout=5).stdout == "done\n"


def test_gotcha_5_commands_stop_after_their_timeout_background_too(sandbox) -> None:
    assert inspect.signature(sandbox.commands.run).parameters["timeout"].default == 60
    limited = sandbox.commands.run("sleep 600", background=True, timeout=2)
    unlimited = sandbox.commands.run("sleep 600", background=True, timeout=0)
    try:
        assert wait_until(lambda: limited.pid not in {p.pid for p in sandbox.commands.list()}, EXPIRY_WAIT_S)
        assert unlimited.pid in {p.pid for p in sandbox.commands.list()}
    finally:
        unlimited.kill()


def test_gotcha_6_a_non_zero_exit_raises(sandbox) -> None:
    with pytest.raises(CommandExitException) as raised:
        sandbox.commands.run("echo out; echo err >&2; exit 3")
    assert raised.value.exit_code == 3 and raised.value.stdout == "out\n" and raised.value.stderr == "err\n"
    assert sandbox.commands.run("grep -q nothing /etc/hostname || true").exit_code == 0


def test_gotcha_7_text_is_only_the_last_value(code_sbx) -> None:
    printed = code_sbx.run_code("print('hello')")
    assert printed.text is None
    assert isinstance(printed.logs.stdout, list) and "".join(printed.logs.stdout) == "hello\n"
    assert code_sbx.run_code("print('x'); 6 * 7").text == "42"


def test_gotcha_8_user_errors_do_not_raise_bad_calls_do(code_sbx) -> None:
    execution = code_sbx.run_code("1 / 0")
    assert execution.error.name == "ZeroDivisionError" and "division by zero" in execution.error.value
    assert execution.error.traceback
    context = code_sbx.create_code_context()
    with pytest.raises(e2b.InvalidArgumentException):
        code_sbx.run_code("1", language="python", context=context)
    with pytest.raises(e2b.SandboxException):
        code_sbx.run_code("1", language="no-such-language")
    with pytest.raises(e2b.TimeoutException):
        code_sbx.run_code("import time; time.sleep(30)", timeout=1)


def test_gotcha_9_every_drawn_figure_is_displayed(code_sbx) -> None:
    saved = code_sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.savefig('chart.png')"
    )
    assert saved.error is None
    assert any(r.png for r in saved.results)  # savefig alone still gives an image result
    assert code_sbx.files.read("chart.png", format="bytes").startswith(PNG_MAGIC)  # the named file
    pil = code_sbx.run_code("from PIL import Image\nImage.new('RGB', (8, 8), 'red').save('red.png')")
    assert pil.error is None and any(r.png for r in pil.results)  # Image.save displays the image too
    assert base64.b64decode(next(r.png for r in pil.results if r.png)).startswith(PNG_MAGIC)


def test_gotcha_10_kernel_state_persists_shell_state_does_not(code_sbx) -> None:
    code_sbx.run_code("import math\nradius = 2")
    assert code_sbx.run_code("round(math.pi * radius ** 2, 2)").text == "12.57"
    code_sbx.commands.run("mkdir -p /tmp/elsewhere && cd /tmp/elsewhere && export COLOUR=blue")
    assert code_sbx.commands.run("pwd; echo \"[$COLOUR]\"").stdout == "/home/user\n[]\n"
    assert code_sbx.commands.run("pwd; echo $COLOUR", cwd="/tmp/elsewhere", envs={"COLOUR": "blue"}).stdout == (
        "/tmp/elsewhere\nblue\n"
    )
    code_sbx.run_code("open('shared.txt', 'w').write('both')")
    assert code_sbx.commands.run("cat shared.txt").stdout == "both"


def test_gotcha_11_binary_files_need_bytes(sandbox) -> None:
    payload = bytes(range(256))
    sandbox.files.write("blob.bin", payload)
    assert sandbox.files.read("blob.bin").encode() != payload  # text mode mangles it
    assert bytes(sandbox.files.read("blob.bin", format="bytes")) == payload


def test_gotcha_12_list_is_a_paginator_with_typed_filters(e2b_server) -> None:
    mine = Sandbox.create(metadata={"owner": "gotcha-12"})
    theirs = Sandbox.create(metadata={"owner": "someone-else"})
    try:
        paginator = Sandbox.list()
        assert not isinstance(paginator, list) and hasattr(paginator, "has_next")
        with pytest.raises(AttributeError):
            Sandbox.list(query={"metadata": {"owner": "gotcha-12"}}).next_items()
        assert {mine.sandbox_id, theirs.sandbox_id} <= listed_ids()  # the backend lists everyone's
        query = SandboxQuery(metadata={"owner": "gotcha-12"}, state=[SandboxState.RUNNING])
        assert listed_ids(query) == {mine.sandbox_id}
    finally:
        mine.kill()
        theirs.kill()


def test_gotcha_13_relative_paths_and_the_user(sandbox) -> None:
    sandbox.files.write("relative.txt", "here")
    assert sandbox.commands.run("cat /home/user/relative.txt && whoami").stdout == "hereuser\n"
    with pytest.raises(CommandExitException):
        sandbox.commands.run("touch /etc/gotcha-13")
    assert sandbox.commands.run("touch /etc/gotcha-13 && whoami", user="root").stdout == "root\n"


def test_gotcha_14_connect_resumes_and_kill_reports(e2b_server) -> None:
    assert Sandbox.kill("nosuchsandbox00000000") is False
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT_S)
    try:
        sbx.files.write("kept.txt", "yes")
        assert sbx.pause() is True
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        resumed = Sandbox.connect(sbx.sandbox_id)
        assert resumed.get_info().state == SandboxState.RUNNING and resumed.files.read("kept.txt") == "yes"
        resumed.pause()
    finally:
        assert Sandbox.kill(sbx.sandbox_id) is True  # works on a paused sandbox
    assert sbx.sandbox_id not in listed_ids()


def test_gotcha_15_metrics_are_snake_case_dataclasses(sandbox) -> None:
    samples: list = []

    def sampled() -> bool:
        samples[:] = sandbox.get_metrics()
        return bool(samples)

    assert wait_until(sampled, METRICS_WAIT_S)
    first = samples[0]
    assert not isinstance(first, dict)
    assert first.cpu_count >= 1 and first.mem_total > 0 and first.disk_total > 0
    assert not hasattr(first, "cpuUsedPct") and isinstance(first.cpu_used_pct, float)


def test_gotcha_16_names_that_do_not_exist(e2b_server) -> None:
    assert not hasattr(Sandbox, "beta_create")
    with pytest.raises(TypeError):
        Sandbox.create(auto_pause=True)
    with Sandbox.create() as sbx:
        assert not hasattr(sbx.files, "watch")
        handle = sbx.files.watch_dir("/home/user")
        handle.stop()
    assert not hasattr(CodeSandbox, "create_context") and hasattr(CodeSandbox, "create_code_context")
    # The deprecated names still exist; their replacements are the pause(mode=) parameter and commands.
    assert hasattr(Sandbox, "beta_pause") and "mode" in inspect.signature(Sandbox.pause).parameters
    assert "secure" in inspect.signature(Sandbox.create).parameters


def test_gotcha_17_mcp_catalogue_keys_are_exact() -> None:
    """The SDK's catalogue types fix the key names (githubOfficial itself runs on E2B cloud only)."""
    from e2b.sandbox.mcp import McpServer

    servers = typing.get_type_hints(McpServer)
    assert "githubPersonalAccessToken" in typing.get_type_hints(servers["githubOfficial"])
    assert "github" not in servers or "githubPersonalAccessToken" not in typing.get_type_hints(servers["github"])
    assert "mcp" in inspect.signature(Sandbox.create).parameters


def test_gotcha_18_envs_reach_every_process_secrets_do_not(sandbox) -> None:
    """A value passed with envs= is readable by any code in the sandbox; what a sandbox holds of a
    secret is only its placeholder."""
    result = sandbox.commands.run("cat /proc/self/environ | tr '\\0' '\\n' | grep ^TOKEN=", envs={"TOKEN": "t0k"})
    assert result.stdout == "TOKEN=t0k\n"
    from e2b import Secret

    assert {"name", "value"} <= set(inspect.signature(Secret.create).parameters)
    assert Secret.fill("anthropic-key") == "${e2b.secrets.anthropic-key}"
    assert "network" in inspect.signature(Sandbox.create).parameters
