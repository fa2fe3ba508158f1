"""The pytest plugin, driven through pytester against real e2b-local servers and real sandboxes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin.conftest import CliServer

SDK_VARIABLES = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pytest-project"

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"

# The suite under test: it writes what it saw to records.jsonl, and the environment it is left with to
# env-after-<worker>.json once its session is over.
CONFTEST = """
import json, os

def pytest_unconfigure(config):
    worker = getattr(config, "workerinput", {}).get("workerid", "master")
    with open(os.path.join(os.environ["RECORD_DIR"], f"env-after-{worker}.json"), "w") as f:
        json.dump({k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}, f)
"""

SUITE = """
import json, os
import pytest
from e2b import Sandbox


def record(sandbox=None, **fields):
    if sandbox is not None:
        fields.update(id=sandbox.sandbox_id, metadata=sandbox.get_info().metadata)
    fields.update(url=os.environ.get("E2B_API_URL"), worker=os.environ.get("PYTEST_XDIST_WORKER", "master"))
    with open(os.path.join(os.environ["RECORD_DIR"], "records.jsonl"), "a") as f:
        f.write(json.dumps(fields) + "\\n")


def test_sync(e2b_sandbox, e2b_session):
    assert e2b_sandbox.commands.run("echo hi").stdout == "hi\\n"
    record(e2b_sandbox, kind="sync", pid=e2b_session.pid, started=e2b_session.started,
           backend=e2b_session.backend, session=e2b_session.session_id)


@pytest.mark.e2b(template="code-interpreter-v1")
def test_code_interpreter(e2b_sandbox):
    assert e2b_sandbox.run_code("6 * 7").text == "42"
    record(e2b_sandbox, kind="code-interpreter")


@pytest.mark.asyncio
async def test_async(e2b_async_sandbox):
    assert (await e2b_async_sandbox.commands.run("echo async")).stdout == "async\\n"
    info = await e2b_async_sandbox.get_info()
    record(kind="async", id=e2b_async_sandbox.sandbox_id, metadata=info.metadata)


@pytest.mark.parametrize("e2b_sandbox", ["base", "code-interpreter-v1"], indirect=True)
def test_parameter(e2b_sandbox):
    record(e2b_sandbox, kind="parameter", code_interpreter=hasattr(e2b_sandbox, "run_code"))


def test_leaks():
    sandbox = Sandbox.create(metadata={"owner": "leaky"})
    record(sandbox, kind="leak")


def test_cleans_up():
    sandbox = Sandbox.create()
    record(sandbox, kind="clean")
    sandbox.kill()
"""


def alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (an exited one may wait for its reaper a while)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def records(directory: Path) -> list[dict]:
    """What the suite under test recorded."""
    return [json.loads(line) for line in (directory / "records.jsonl").read_text().splitlines()]


def env_after(directory: Path) -> dict[str, dict]:
    """The SDK environment of each of the suite's processes after its session."""
    return {p.stem.removeprefix("env-after-"): json.loads(p.read_text()) for p in directory.glob("env-after-*.json")}


def sandbox_ids(server: CliServer) -> set[str]:
    """Ids of the sandboxes running on `server`, through the SDK."""
    from e2b import Sandbox

    paginator = Sandbox.list(**server.sdk)
    ids: set[str] = set()
    while paginator.has_next:
        ids |= {info.sandbox_id for info in paginator.next_items()}
    return ids


@pytest.fixture
def suite(pytester: pytest.Pytester, isolated_env: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The suite under test in pytester's directory; its records go to records/."""
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    record_dir = pytester.path / "records"
    record_dir.mkdir()
    monkeypatch.setenv("RECORD_DIR", str(record_dir))
    return record_dir


def check_leak_report(result: pytest.RunResult, seen: list[dict]) -> None:
    """The guard failed test_leaks alone, naming its sandbox and metadata."""
    result.assert_outcomes(passed=7, errors=1)
    leak = next(r for r in seen if r["kind"] == "leak")
    out = result.stdout.str()
    assert "ERROR at teardown of test_leaks" in out
    assert f"test_suite.py::test_leaks left 1 sandbox(es) running (now killed):\n  {leak['id']}" in out
    assert "'owner': 'leaky'" in out


def test_reuses_a_running_server(suite: Path, pytester: pytest.Pytester, running_server: CliServer,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pid = running_server.pid()
    before = sandbox_ids(running_server)
    monkeypatch.setenv("E2B_LOCAL_HOME", str(running_server.home))

    result = pytester.runpytest_inprocess("--e2b-leak-check", "-p", "no:cacheprovider")

    seen = records(suite)
    check_leak_report(result, seen)
    assert {r["kind"] for r in seen} == {"sync", "code-interpreter", "async", "parameter", "leak", "clean"}
    assert {r["url"] for r in seen} == {running_server.sdk_env["E2B_API_URL"]}
    sync = next(r for r in seen if r["kind"] == "sync")
    assert (sync["pid"], sync["started"], sync["backend"]) == (pid, False, "local")
    assert sorted(r["code_interpreter"] for r in seen if r["kind"] == "parameter") == [False, True]
    assert all(r["metadata"]["e2b_pytest_session"] == sync["session"] for r in seen if r["kind"] != "clean")
    assert next(r for r in seen if r["kind"] == "leak")["metadata"]["e2b_pytest_test"] == "test_suite.py::test_leaks"
    # Every sandbox is gone, the server is the same process, and the environment is as it was.
    assert sandbox_ids(running_server) == before
    assert not {r["id"] for r in seen} & before
    assert running_server.pid() == pid
    assert env_after(suite) == {"master": dict.fromkeys(SDK_VARIABLES)}
    assert not any(os.environ.get(k) for k in SDK_VARIABLES)


def test_xdist_workers_share_the_running_server(suite: Path, pytester: pytest.Pytester, running_server: CliServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pid = running_server.pid()
    before = sandbox_ids(running_server)
    monkeypatch.setenv("E2B_LOCAL_HOME", str(running_server.home))

    result = pytester.runpytest_subprocess("--e2b-leak-check", "-n", "2", "-p", "no:cacheprovider", timeout=300)

    seen = records(suite)
    check_leak_report(result, seen)
    assert {r["worker"] for r in seen} == {"gw0", "gw1"}
    assert {r["url"] for r in seen} == {running_server.sdk_env["E2B_API_URL"]}
    # Each sandbox carries its own worker's tag, and one run id for all.
    assert all(r["metadata"]["e2b_pytest_worker"] == r["worker"] for r in seen if r["kind"] != "clean")
    assert len({r["metadata"]["e2b_pytest_session"] for r in seen if r["kind"] != "clean"}) == 1
    assert sandbox_ids(running_server) == before
    assert running_server.pid() == pid
    assert env_after(suite) == {w: dict.fromkeys(SDK_VARIABLES) for w in ("master", "gw0", "gw1")}


def test_starts_and_stops_a_private_server(pytester: pytest.Pytester, isolated_env: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE.split("\n@pytest.mark.e2b")[0])
    record_dir = pytester.path / "records"
    record_dir.mkdir()
    monkeypatch.setenv("RECORD_DIR", str(record_dir))

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    [sync] = records(record_dir)
    assert sync["started"] is True
    assert sync["url"].startswith("http://127.0.0.1:")
    assert not alive(sync["pid"])
    assert not Path(f"/tmp/e2b-pytest-{sync['session'][:12]}").exists()
    assert env_after(record_dir) == {"master": dict.fromkeys(SDK_VARIABLES)}


def test_cloud_backend_uses_the_environment_as_it_is(suite: Path, pytester: pytest.Pytester,
                                                     running_server: CliServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A server named only by the SDK's variables stands in for E2B cloud: the plugin must start nothing.
    for key, value in running_server.sdk_env.items():
        monkeypatch.setenv(key, value)
    before = sandbox_ids(running_server)

    result = pytester.runpytest_inprocess("--e2b-backend=cloud", "-p", "no:cacheprovider", "-k", "sync or async")

    result.assert_outcomes(passed=2)
    seen = records(suite)
    sync = next(r for r in seen if r["kind"] == "sync")
    assert (sync["backend"], sync["started"], sync["pid"]) == ("cloud", False, None)
    assert {r["url"] for r in seen} == {running_server.sdk_env["E2B_API_URL"]}
    assert not Path(f"/tmp/e2b-pytest-{sync['session'][:12]}").exists()
    assert sandbox_ids(running_server) == before
    assert env_after(suite)["master"] == {k: running_server.sdk_env[k] for k in SDK_VARIABLES}


def test_cloud_backend_needs_a_key(suite: Path, pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--e2b-backend=cloud", "-p", "no:cacheprovider", "-k", "test_sync")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--e2b-backend=cloud needs E2B_API_KEY in the environment*"])


def test_example_project_through_the_ci_recipe(isolated_env: None) -> None:
    # The README's recipe: the example project's own tests, with the leak check, on two workers.
    result = subprocess.run([sys.executable, "-m", "pytest", "--e2b-leak-check", "-n", "2", "-p", "no:cacheprovider"],
                            cwd=EXAMPLE, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout
