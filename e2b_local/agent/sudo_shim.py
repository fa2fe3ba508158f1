#!/usr/bin/python3 -I
"""`sudo` inside a sandbox: asks the agent, the sandbox's root, to run a command as root (or `-u USER`).

Every process of a sandbox has the no-new-privileges flag, so a setuid sudo cannot work; this
program takes its place (the launcher mounts it over /usr/bin/sudo). It hands the agent its
standard input, output and error (terminal included) over the agent's socket, forwards the
signals it gets, and exits as the command exits. The agent checks the caller against the
sandbox's sudoers policy; it can only ever reach the sandbox's own root.

This file runs with the sandbox's Python and imports nothing of e2b_local.
"""

import json
import os
import signal
import socket
import sys

# The agent's abstract socket (in the sandbox's own network namespace, so only its processes see it).
ADDRESS = "\0e2b-local-sudo"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
USAGE = """usage: sudo [-EHnSsik] [-u user] [--] command [arg ...]
e2b-local's sudo runs a command as root (or as -u USER) with passwordless access, like E2B's sandboxes."""


def parse(args: list[str]) -> dict:
    """The request for the agent, from sudo's command line (the options a sandbox's users need)."""
    request = {"user": "root", "mode": "run", "preserve_env": False, "argv": []}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            if name == "user":
                request["user"] = value or args[i + 1]
                i += 0 if value else 1
            elif name == "preserve-env":
                request["preserve_env"] = True
            elif name == "login":
                request["mode"] = "login"
            elif name == "shell":
                request["mode"] = "shell"
            elif name == "help":
                request["mode"] = "help"
            elif name == "version":
                request["mode"] = "version"
            elif name in ("non-interactive", "stdin", "set-home", "reset-timestamp", "validate", "remove-timestamp"):
                if name in ("validate", "reset-timestamp", "remove-timestamp"):
                    request["mode"] = "noop"
            else:
                raise SystemExit(f"sudo: unrecognized option '--{name}'\n{USAGE}")
            i += 1
            continue
        letters = arg[1:]
        for j, letter in enumerate(letters):
            if letter in "ug":
                value = letters[j + 1:] or (args[i + 1] if i + 1 < len(args) else None)
                if value is None:
                    raise SystemExit(f"sudo: option requires an argument -- '{letter}'\n{USAGE}")
                if letter == "u":
                    request["user"] = value
                if not letters[j + 1:]:
                    i += 1
                break
            if letter == "E":
                request["preserve_env"] = True
            elif letter == "i":
                request["mode"] = "login"
            elif letter == "s":
                request["mode"] = "shell"
            elif letter in "vkK":
                request["mode"] = "noop"
            elif letter == "h":
                request["mode"] = "help"
            elif letter == "V":
                request["mode"] = "version"
            elif letter not in "nSHAPb":
                raise SystemExit(f"sudo: invalid option -- '{letter}'\n{USAGE}")
        i += 1
    request["argv"] = args[i:]
    if request["mode"] == "run" and not request["argv"]:
        raise SystemExit(USAGE)
    return request


def main() -> int:
    """Run the command through the agent; returns its exit status."""
    request = parse(sys.argv[1:])
    if request["mode"] == "help":
        print(USAGE)
        return 0
    if request["mode"] == "version":
        print("Sudo version 1.9 (e2b-local)")
        return 0
    if request["mode"] == "noop":
        return 0
    request["env"] = dict(os.environ)
    try:
        request["cwd"] = os.getcwd()
    except OSError:
        request["cwd"] = "/"
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(ADDRESS)
    except OSError as exc:
        print(f"sudo: cannot reach the sandbox agent: {exc}", file=sys.stderr)
        return 1
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], fds)
    for signum in FORWARDED:
        signal.signal(signum, lambda n, _frame: conn.sendall(f"{n}\n".encode()))
    answer = b""
    while not answer.endswith(b"\n"):
        try:
            chunk = conn.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            print("sudo: the sandbox agent went away", file=sys.stderr)
            return 1
        answer += chunk
    reply = json.loads(answer)
    if "error" in reply:
        print(f"sudo: {reply['error']}", file=sys.stderr)
        return int(reply.get("status", 1))
    code = int(reply["exit"])
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main())
