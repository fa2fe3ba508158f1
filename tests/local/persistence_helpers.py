"""Helpers of the persistence tests: a process whose state lives only in memory, and polling."""

from __future__ import annotations

import time
from collections.abc import Callable

from e2b import CommandExitException, Sandbox

# A process holding a random token in memory only; SIGUSR1 makes it write the token to a file. The
# same token after a resume proves the process and its memory survived; a new process cannot know it.
HOLDER = """\
import os, secrets, signal, time
token = secrets.token_hex(8)
def dump(*_):
    with open("/home/user/token.tmp", "w") as f:
        f.write(token)
    os.rename("/home/user/token.tmp", "/home/user/token.txt")
signal.signal(signal.SIGUSR1, dump)
with open("/home/user/holder.pid.tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename("/home/user/holder.pid.tmp", "/home/user/holder.pid")
while True:
    time.sleep(0.05)
"""
READ_TOKEN = ("rm -f /home/user/token.txt; kill -USR1 $(cat /home/user/holder.pid) || exit 3; "
              "for i in $(seq 200); do [ -f /home/user/token.txt ] && break; sleep 0.05; done; "
              "cat /home/user/token.txt")


def start_holder(sandbox: Sandbox) -> str:
    """Start the token holder in the background; returns its token."""
    sandbox.files.write("/home/user/holder.py", HOLDER)
    # A pid file left by an earlier holder (its files survive a reboot) would name a dead process.
    sandbox.commands.run("rm -f /home/user/holder.pid")
    sandbox.commands.run("python3 /home/user/holder.py", background=True)
    sandbox.commands.run("for i in $(seq 200); do [ -s /home/user/holder.pid ] && break; sleep 0.05; done")
    token = read_token(sandbox)
    assert token
    return token


def read_token(sandbox: Sandbox) -> str | None:
    """The holder's in-memory token, or None when the holder process is gone."""
    try:
        return sandbox.commands.run(READ_TOKEN).stdout.strip()
    except CommandExitException:
        return None


def wait_for(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll `condition` until it holds (the limit only stops a broken run from hanging)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)
