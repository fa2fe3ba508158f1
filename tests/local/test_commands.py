"""envd's process service through the real SDK: foreground, background, stdin, PTY, users, errors."""

from __future__ import annotations

import time

import pytest
from e2b import AsyncSandbox, CommandExitException, PtySize, Sandbox, TimeoutException


@pytest.fixture(scope="module")
def sbx(e2b_server) -> Sandbox:
    sandbox = Sandbox.create()
    yield sandbox
    sandbox.kill()


def test_echo_and_default_user(sbx: Sandbox) -> None:
    result = sbx.commands.run("echo hi; id -un; pwd; echo $HOME")
    assert result.stdout.splitlines() == ["hi", "user", "/home/user", "/home/user"]
    assert result.exit_code == 0
    assert result.error is None


def test_root_user(sbx: Sandbox) -> None:
    assert sbx.commands.run("id -u", user="root").stdout.strip() == "0"
    assert sbx.commands.run("cd ~ && pwd", user="root").stdout.strip() == "/root"


def test_envs_cwd_and_sandbox_variables(sbx: Sandbox) -> None:
    result = sbx.commands.run("echo $GREETING; pwd; echo $E2B_SANDBOX $E2B_SANDBOX_ID $E2B_TEMPLATE_ID",
                              envs={"GREETING": "hello"}, cwd="/tmp")
    assert result.stdout.splitlines() == ["hello", "/tmp", f"true {sbx.sandbox_id} base"]


def test_create_envs_reach_every_process(e2b_server) -> None:
    with Sandbox.create(envs={"PROJECT": "demo", "SHARED": "a"}) as sandbox:
        out = sandbox.commands.run("echo $PROJECT $SHARED", envs={"SHARED": "b"}).stdout.strip()
        assert out == "demo b"


def test_stdout_stderr_streamed_to_callbacks(sbx: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    result = sbx.commands.run("echo one; echo two >&2; echo three", on_stdout=out.append, on_stderr=err.append)
    assert "".join(out) == "one\nthree\n" == result.stdout
    assert "".join(err) == "two\n" == result.stderr


def test_nonzero_exit_raises(sbx: Sandbox) -> None:
    with pytest.raises(CommandExitException) as info:
        sbx.commands.run("echo partial; echo bad >&2; exit 3")
    assert info.value.exit_code == 3
    assert info.value.stdout == "partial\n"
    assert info.value.stderr == "bad\n"


def test_short_timeout_raises_and_kills(sbx: Sandbox) -> None:
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 30; echo late > /tmp/late", timeout=1)
    time.sleep(0.5)
    # The Start deadline is the process lifetime: the command was killed, not left running.
    assert "sleep 30" not in sbx.commands.run("ps -eo args").stdout


def test_background_output_arrives_while_running(sbx: Sandbox) -> None:
    # The command cannot end before /tmp/go exists, which this test makes only once "ready" has arrived.
    handle = sbx.commands.run("echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done", background=True)
    seen: list[str] = []

    def on_stdout(chunk: str) -> None:
        seen.append(chunk)
        if "ready" in chunk:
            sbx.files.write("/tmp/go", "")

    result = handle.wait(on_stdout=on_stdout)
    assert result.stdout == "ready\ndone\n"
    assert "".join(seen) == "ready\ndone\n"


def test_list_connect_and_kill(sbx: Sandbox) -> None:
    handle = sbx.commands.run("sleep 60", background=True)
    listed = {p.pid: p for p in sbx.commands.list()}
    assert handle.pid in listed
    assert listed[handle.pid].cmd == "/bin/bash"
    assert listed[handle.pid].args[-1] == "sleep 60"
    handle.disconnect()
    again = sbx.commands.connect(handle.pid)
    assert sbx.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        again.wait()
    assert sbx.commands.kill(handle.pid) is False
    assert handle.pid not in {p.pid for p in sbx.commands.list()}


def test_process_survives_client_disconnect(sbx: Sandbox) -> None:
    handle = sbx.commands.run("sleep 0.5; echo finished > /tmp/survived", background=True)
    handle.disconnect()
    time.sleep(1.5)
    assert sbx.commands.run("cat /tmp/survived").stdout == "finished\n"


def test_stdin_send_and_close(sbx: Sandbox) -> None:
    handle = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(handle.pid, "hello ")
    sbx.commands.send_stdin(handle.pid, b"bytes\n")
    sbx.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "hello bytes\n"


def test_stream_input(sbx: Sandbox) -> None:
    handle = sbx.commands.run("wc -l", background=True, stdin=True)
    sbx.commands.stream_input(handle.pid, (f"line {i}\n" for i in range(5)))
    sbx.commands.close_stdin(handle.pid)
    assert handle.wait().stdout.strip() == "5"


def test_pty_roundtrip_and_resize(sbx: Sandbox) -> None:
    chunks: list[bytes] = []
    terminal = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.resize(terminal.pid, PtySize(rows=40, cols=100))
    sbx.pty.send_stdin(terminal.pid, b"stty size; tty; exit\n")
    terminal.wait(on_pty=chunks.append)
    text = b"".join(chunks).decode(errors="replace")
    assert "40 100" in text
    assert "/dev/pts/" in text


def test_pty_kill(sbx: Sandbox) -> None:
    terminal = sbx.pty.create(PtySize(rows=24, cols=80))
    assert sbx.pty.kill(terminal.pid) is True
    with pytest.raises(CommandExitException):
        terminal.wait()  # the end event: the process is gone from the table from here on
    assert sbx.pty.kill(terminal.pid) is False


def test_long_output_is_complete(sbx: Sandbox) -> None:
    result = sbx.commands.run("seq 1 200000")
    lines = result.stdout.splitlines()
    assert len(lines) == 200000
    assert lines[-1] == "200000"


def test_unknown_cwd_is_an_error(sbx: Sandbox) -> None:
    from e2b import InvalidArgumentException

    with pytest.raises(InvalidArgumentException):
        sbx.commands.run("pwd", cwd="/does/not/exist")


async def test_async_commands(e2b_server) -> None:
    sandbox = await AsyncSandbox.create()
    try:
        result = await sandbox.commands.run("echo async; echo err >&2")
        assert (result.stdout, result.stderr) == ("async\n", "err\n")
        handle = await sandbox.commands.run("cat", background=True, stdin=True)
        await sandbox.commands.send_stdin(handle.pid, "piped\n")
        await sandbox.commands.close_stdin(handle.pid)
        assert (await handle.wait()).stdout == "piped\n"
        with pytest.raises(CommandExitException):
            await sandbox.commands.run("exit 7")
        with pytest.raises(TimeoutException):
            await sandbox.commands.run("sleep 10", timeout=1)
        background = await sandbox.commands.run("sleep 30", background=True)
        assert background.pid in [p.pid for p in await sandbox.commands.list()]
        assert await sandbox.commands.kill(background.pid) is True
    finally:
        await sandbox.kill()
