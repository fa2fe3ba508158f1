"""The skill's scripts as a user runs them: subprocesses against e2b-local, checking JSON and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOTFS_CACHE

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def script_env(e2b_server) -> dict[str, str]:
    """No E2B_API_KEY: the scripts must find the running e2b-local server by its data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(E2B_LOCAL_HOME=str(e2b_server.home), E2B_LOCAL_ROOTFS=ROOTFS_CACHE)
    return env


def script(env: dict[str, str], name: str, *args: str, stdin: str | None = None,
           cwd: Path | None = None) -> tuple[int, object, str]:
    """Run scripts/<name>.py; (exit code, parsed JSON stdout or None, stderr)."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=300, cwd=cwd)
    try:
        payload = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        payload = None
    return proc.returncode, payload, proc.stderr


@pytest.fixture(scope="module")
def sandbox_id(script_env: dict[str, str]) -> str:
    code, info, err = script(script_env, "lifecycle", "create", "--timeout", "600", "--metadata", "owner=tests")
    assert code == 0, err
    assert "e2b-local" in err  # the backend is announced on stderr
    yield info["sandbox_id"]
    script(script_env, "lifecycle", "kill", info["sandbox_id"])


def test_lifecycle(script_env: dict[str, str], sandbox_id: str) -> None:
    code, info, _ = script(script_env, "lifecycle", "info", sandbox_id)
    assert code == 0 and info["sandbox_id"] == sandbox_id and info["metadata"] == {"owner": "tests"}
    code, listed, _ = script(script_env, "lifecycle", "list", "--metadata", "owner=tests")
    assert code == 0 and [s["sandbox_id"] for s in listed["sandboxes"]] == [sandbox_id]
    assert script(script_env, "lifecycle", "set-timeout", sandbox_id, "900")[0] == 0
    code, _, err = script(script_env, "lifecycle", "info", "nosuchsandbox0000000")
    assert code == 4 and "Traceback" not in err
    assert script(script_env, "lifecycle", "bogus-subcommand")[0] == 2


def test_lifecycle_kill_by_filter(script_env: dict[str, str]) -> None:
    ids = [script(script_env, "lifecycle", "create", "--metadata", "batch=doomed")[1]["sandbox_id"] for _ in range(2)]
    code, killed, _ = script(script_env, "lifecycle", "kill", "--all", "--metadata", "batch=doomed")
    assert code == 0 and sorted(killed["killed"]) == sorted(ids)
    code, result, _ = script(script_env, "lifecycle", "kill", ids[0])
    assert code == 4 and result["not_found"] == [ids[0]]


def test_kill_all_without_a_filter_or_yes_kills_nothing(script_env: dict[str, str], sandbox_id: str) -> None:
    code, out, err = script(script_env, "lifecycle", "kill", "--all")
    assert code == 2 and out is None
    assert "other people's" in err and "--yes" in err and "Traceback" not in err
    code, out, _ = script(script_env, "lifecycle", "kill", "--all", "--state", "running")
    assert code == 2 and out is None  # a state filter does not single out the caller's sandboxes
    code, info, _ = script(script_env, "lifecycle", "info", sandbox_id)
    assert code == 0 and info["state"] == "running"


def test_kill_all_dry_run_lists_without_killing(script_env: dict[str, str], sandbox_id: str) -> None:
    code, out, _ = script(script_env, "lifecycle", "kill", "--all", "--dry-run")
    assert code == 0 and sandbox_id in out["would_kill"] and "killed" not in out
    code, out, _ = script(script_env, "lifecycle", "kill", "--all", "--metadata", "owner=tests", "--dry-run")
    assert code == 0 and out["would_kill"] == [sandbox_id]
    code, info, _ = script(script_env, "lifecycle", "info", sandbox_id)
    assert code == 0 and info["state"] == "running"


def test_commands(script_env: dict[str, str], sandbox_id: str) -> None:
    code, result, err = script(script_env, "commands", "run", "--sandbox-id", sandbox_id, "--env", "X=42",
                               "echo $X; echo oops >&2")
    assert code == 0 and result["stdout"] == "42\n" and result["stderr"] == "oops\n"
    assert "42" in err  # streamed to stderr while it ran
    code, result, _ = script(script_env, "commands", "run", "--sandbox-id", sandbox_id, "exit 3")
    assert code == 1 and result["exit_code"] == 3
    code, started, _ = script(script_env, "commands", "background", "--sandbox-id", sandbox_id, "--stdin",
                              "cat > /tmp/from-stdin.txt")
    assert code == 0
    pid = str(started["pid"])
    code, listed, _ = script(script_env, "commands", "list", sandbox_id)
    listed_process = next(p for p in listed["processes"] if p["pid"] == int(pid))
    assert listed_process["command"] == "cat > /tmp/from-stdin.txt"  # not /bin/bash
    assert script(script_env, "commands", "send-stdin", sandbox_id, pid, "hello", "--eof")[0] == 0
    code, result, _ = script(script_env, "commands", "run", "--sandbox-id", sandbox_id,
                             "sleep 0.5; cat /tmp/from-stdin.txt")
    assert result["stdout"] == "hello"
    code, result, _ = script(script_env, "commands", "background", "--sandbox-id", sandbox_id, "sleep 300")
    code, killed, _ = script(script_env, "commands", "kill", sandbox_id, str(result["pid"]))
    assert code == 0 and killed["killed"] is True
    code, killed, _ = script(script_env, "commands", "kill", sandbox_id, str(result["pid"]))
    assert code == 4 and killed["killed"] is False
    assert script(script_env, "commands", "run", "--sandbox-id", sandbox_id, "--timeout", "1", "sleep 10")[0] == 5


def test_files(script_env: dict[str, str], sandbox_id: str, tmp_path: Path) -> None:
    local = tmp_path / "data.csv"
    local.write_text("a,b\n1,2\n")
    code, _, err = script(script_env, "files", "upload", sandbox_id, str(local), "/home/user/data/data.csv")
    assert code == 0, err
    code, listed, _ = script(script_env, "files", "list", sandbox_id, "/home/user/data")
    assert code == 0 and [e["name"] for e in listed["entries"]] == ["data.csv"]
    code, read, _ = script(script_env, "files", "read", sandbox_id, "/home/user/data/data.csv")
    assert read["content"] == "a,b\n1,2\n"
    assert script(script_env, "files", "write", sandbox_id, "notes.txt", stdin="from stdin\n")[0] == 0
    target = tmp_path / "notes.txt"
    assert script(script_env, "files", "download", sandbox_id, "/home/user/notes.txt", str(target))[0] == 0
    assert target.read_text() == "from stdin\n"
    code, _, err = script(script_env, "files", "read", sandbox_id, "/home/user/missing.txt")
    assert code == 4 and "Traceback" not in err


def test_files_upload_help_says_folders_work(script_env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "files.py"), "upload", "--help"], capture_output=True,
                          text=True, env=script_env, timeout=60)
    assert proc.returncode == 0 and "folder" in proc.stdout and "./project" in proc.stdout


def test_metrics(script_env: dict[str, str], sandbox_id: str) -> None:
    code, sample, err = script(script_env, "metrics", sandbox_id)
    assert code == 0, err
    text = json.dumps(sample)
    assert "cpu_used_pct" in text and "mem_used" in text
    code, _, _ = script(script_env, "metrics", "nosuchsandbox0000000")
    assert code == 4
