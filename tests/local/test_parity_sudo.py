"""`sudo` for the sandbox's `user`, as on E2B, without weakening the isolation: the no-new-privileges
flag stays set, and sudo reaches the sandbox's own root only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2b import AsyncSandbox, CommandExitException, PtySize, Sandbox


@pytest.fixture(scope="module")
def sbx(e2b_server) -> Iterator[Sandbox]:
    sandbox = Sandbox.create()
    yield sandbox
    sandbox.kill()


def test_passwordless_sudo_runs_as_the_sandbox_root(sbx: Sandbox) -> None:
    result = sbx.commands.run("sudo id -u; sudo -n whoami; sudo sh -c 'echo $SUDO_USER $HOME $USER'")
    assert result.stdout.split("\n")[:3] == ["0", "root", "user /root root"]
    sbx.commands.run("sudo mkdir -p /opt/by-sudo && sudo touch /opt/by-sudo/f && sudo chown user /opt/by-sudo/f")
    assert sbx.commands.run("stat -c %U:%G /opt/by-sudo /opt/by-sudo/f").stdout.split() == ["root:root", "user:root"]
    assert sbx.commands.run("sudo -u user id -un").stdout == "user\n"
    assert sbx.commands.run("sudo -i pwd").stdout == "/root\n"
    assert sbx.commands.run("cd /tmp && sudo pwd").stdout == "/tmp\n"


def test_sudo_passes_input_output_and_exit_status(sbx: Sandbox) -> None:
    result = sbx.commands.run("echo piped | sudo tee /root/in.txt >/dev/null; sudo cat /root/in.txt; "
                              "sudo sh -c 'echo to-stderr >&2'")
    assert result.stdout == "piped\n"
    assert result.stderr == "to-stderr\n"
    with pytest.raises(CommandExitException) as failed:
        sbx.commands.run("sudo sh -c 'exit 7'")
    assert failed.value.exit_code == 7
    with pytest.raises(CommandExitException) as missing:
        sbx.commands.run("sudo no-such-command-here")
    assert "command not found" in missing.value.stderr


def test_sudo_in_a_terminal(sbx: Sandbox) -> None:
    output = bytearray()
    terminal = sbx.pty.create(size=PtySize(rows=24, cols=80))
    sbx.pty.send_stdin(terminal.pid, b"sudo sh -c 'test -t 0 && test -t 1 && echo tty-$(id -u)'; exit\n")
    terminal.wait(on_pty=output.extend)
    assert b"tty-0" in output


def test_isolation_stays(sbx: Sandbox) -> None:
    # Still no new privileges for anything in the sandbox, root included.
    flags = sbx.commands.run("sudo grep NoNewPrivs /proc/self/status").stdout.split()
    assert flags == ["NoNewPrivs:", "1"]
    # Root of the sandbox, not of the host: the kernel's settings stay out of reach.
    denied = sbx.commands.run("sudo sh -c 'echo 1 > /proc/sys/kernel/sysrq' 2>&1 || echo refused")
    assert denied.stdout.strip().endswith("refused")
    # A user the sudoers policy does not name gets no root.
    sbx.commands.run("useradd -m guest", user="root")
    with pytest.raises(CommandExitException) as refused:
        sbx.commands.run("sudo id -u", user="guest")
    assert "not allowed" in refused.value.stderr


async def test_sudo_async(e2b_server) -> None:
    sandbox = await AsyncSandbox.create()
    try:
        result = await sandbox.commands.run("sudo apt-get --version | head -1; sudo id -u")
        assert result.stdout.splitlines()[-1] == "0"
        assert result.stdout.startswith("apt ")
    finally:
        await sandbox.kill()
