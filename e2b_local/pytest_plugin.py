"""A pytest plugin: E2B sandboxes for a test suite, on e2b-local or on E2B cloud.

Installing e2b-local registers it (a `pytest11` entry point). Fixtures:

- `e2b_session` (session): the backend. With `--e2b-backend=local` (the default) it reuses an
  e2b-local already running for the default data directory (or the one `E2B_LOCAL_HOME` names), or
  starts one in a private data directory that shares the built root filesystems, and exports what the
  SDKs need (`E2B_API_URL`, `E2B_SANDBOX_URL`, `E2B_API_KEY`) into `os.environ` for the session. With
  `--e2b-backend=cloud` it uses the environment as it is (`E2B_API_KEY`, `E2B_DOMAIN`).
- `e2b_sandbox` / `e2b_async_sandbox` (per test): a ready `Sandbox` / `AsyncSandbox`, killed after the
  test. The template comes from `@pytest.mark.e2b(template=...)` or an indirect parameter; a
  `code-interpreter` template gives the code interpreter SDK's class.

`--e2b-leak-check` (or `@pytest.mark.e2b(leak_check=True)`) fails a test that leaves sandboxes it
created running, and reports their ids and metadata. Under pytest-xdist all workers share one server
and every sandbox is tagged with the run, the worker and the test, so workers never touch each other's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Metadata keys of the sandboxes this plugin creates or watches.
SESSION_KEY = "e2b_pytest_session"
WORKER_KEY = "e2b_pytest_worker"
TEST_KEY = "e2b_pytest_test"

# A cold first start builds the root filesystems (minutes); later starts take seconds.
START_TIMEOUT = 1800.0
CLI_TIMEOUT = 120.0
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"

_session_id = pytest.StashKey[str]()
_shared_dir = pytest.StashKey[Path]()
_owns_shared_dir = pytest.StashKey[bool]()


@dataclass(frozen=True)
class E2BSession:
    """The backend the session's sandboxes run on."""

    backend: str  # "local" or "cloud"
    env: dict[str, str]  # what the session exported into os.environ (empty for cloud)
    started: bool  # whether this run started the e2b-local server
    pid: int | None = None  # the e2b-local server's pid
    session_id: str = ""
    worker_id: str = "master"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def sdk(self) -> dict[str, str]:
        """SDK keyword arguments that address the backend explicitly (`Sandbox.list(**e2b_session.sdk)`)."""
        if self.backend == "cloud":
            return {}
        return {"api_key": self.env["E2B_API_KEY"], "api_url": self.env["E2B_API_URL"],
                "sandbox_url": self.env["E2B_SANDBOX_URL"]}


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's command-line options."""
    group = parser.getgroup("e2b", "E2B sandboxes (e2b-local plugin)")
    group.addoption("--e2b-backend", choices=("local", "cloud"), default=os.environ.get("E2B_PYTEST_BACKEND", "local"),
                    help="run sandboxes on e2b-local (default) or on E2B cloud / a self-hosted E2B "
                         "(E2B_API_KEY and E2B_DOMAIN from the environment); also E2B_PYTEST_BACKEND")
    group.addoption("--e2b-leak-check", action="store_true", default=False,
                    help="fail a test that leaves sandboxes it created running")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and fix the run's id and the directory its processes share."""
    config.addinivalue_line(
        "markers", "e2b(template=None, leak_check=None, **create_options): options of the e2b_sandbox / "
                   "e2b_async_sandbox fixtures (Sandbox.create keyword arguments) and of the leak check")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "e2b_shared_dir" in workerinput:
        config.stash[_session_id] = workerinput["e2b_session_id"]
        config.stash[_shared_dir] = Path(workerinput["e2b_shared_dir"])
        config.stash[_owns_shared_dir] = False
    else:
        config.stash[_session_id] = uuid.uuid4().hex
        # Short, under /tmp: a private server's data directory lives here, and socket paths are bounded.
        config.stash[_shared_dir] = Path(tempfile.mkdtemp(prefix="e2b-pytest-"))
        config.stash[_owns_shared_dir] = True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: hand each worker the run's id and the shared directory."""
    node.workerinput["e2b_session_id"] = node.config.stash[_session_id]
    node.workerinput["e2b_shared_dir"] = str(node.config.stash[_shared_dir])


def pytest_unconfigure(config: pytest.Config) -> None:
    """The process that owns the shared directory stops the server the run started, once all workers are done."""
    if not config.stash.get(_owns_shared_dir, False):
        return
    shared = config.stash[_shared_dir]
    state_file = shared / STATE_FILE
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if state.get("started"):
            _stop_private_server(state)
    if not _mounted_under(shared):
        shutil.rmtree(shared, ignore_errors=True)


def _worker_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "master"


def _cli(args: list[str], env: dict[str, str], timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    # The installed package's CLI, in this interpreter: the plugin never reaches into the server's modules.
    return subprocess.run([sys.executable, "-m", "e2b_local", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _default_home(env: dict[str, str]) -> Path:
    """The data directory the CLI uses without E2B_LOCAL_HOME."""
    from e2b_local.settings import default_home

    return default_home({k: v for k, v in env.items() if k != "E2B_LOCAL_HOME"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mounted_under(path: Path) -> bool:
    """Whether anything is mounted below `path` (then it must not be removed)."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        return any(line.split()[1].startswith(prefix) for line in f)


def _running_server(env: dict[str, str]) -> dict[str, Any] | None:
    """The SDK environment and pid of the e2b-local running for `env`'s data directory, if one runs."""
    found = _cli(["env", "--json"], env)
    if found.returncode != 0:
        return None
    status = _cli(["status"], env)
    pid = json.loads(status.stdout)["pid"] if status.returncode == 0 else None
    return {"env": json.loads(found.stdout), "pid": pid}


def _start_private_server(shared: Path) -> dict[str, Any]:
    """Start e2b-local in a private data directory that shares the built root filesystems."""
    home = shared / "home"
    home.mkdir(exist_ok=True)
    rootfs = os.environ.get("E2B_LOCAL_ROOTFS") or str(
        Path(os.environ["E2B_LOCAL_HOME"]).expanduser() / "rootfs" if os.environ.get("E2B_LOCAL_HOME")
        else _default_home(dict(os.environ)) / "rootfs")
    env = {**os.environ, "E2B_LOCAL_HOME": str(home), "E2B_LOCAL_ROOTFS": rootfs,
           "E2B_LOCAL_PORT": str(_free_port())}
    started = _cli(["start"], env, timeout=START_TIMEOUT)
    running = _running_server(env) if started.returncode == 0 else None
    if running is None:
        log = home / "server.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise RuntimeError(f"e2b-local did not start (exit {started.returncode}): {started.stderr.strip()}\n{tail}")
    return {**running, "started": True, "home": str(home)}


def _stop_private_server(state: dict[str, Any]) -> None:
    """Kill every sandbox of a server this run started, then stop it."""
    from e2b import Sandbox

    env = state["env"]
    opts = {"api_key": env["E2B_API_KEY"], "api_url": env["E2B_API_URL"], "sandbox_url": env["E2B_SANDBOX_URL"]}
    with contextlib.suppress(Exception):
        for info in _list(Sandbox, {}, opts):
            with contextlib.suppress(Exception):
                Sandbox.kill(info.sandbox_id, **opts)
    _cli(["stop"], {**os.environ, "E2B_LOCAL_HOME": state["home"]})


def _list(sandbox_cls: Any, metadata: dict[str, str], opts: dict[str, str]) -> list[Any]:
    """Every sandbox (running or paused) whose metadata includes `metadata`."""
    from e2b import SandboxQuery

    paginator = sandbox_cls.list(query=SandboxQuery(metadata=metadata) if metadata else None, **opts)
    found: list[Any] = []
    while paginator.has_next:
        found.extend(paginator.next_items())
    return found


def _local_backend(shared: Path) -> dict[str, Any]:
    """Find or start the run's one e2b-local server; the first process of the run to get here decides."""
    with open(shared / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state_file = shared / STATE_FILE
        if state_file.exists():
            return json.loads(state_file.read_text())
        running = _running_server(dict(os.environ))
        state = {**running, "started": False} if running is not None else _start_private_server(shared)
        state_file.write_text(json.dumps(state))
        return state


@pytest.fixture(scope="session")
def e2b_session(request: pytest.FixtureRequest) -> Iterator[E2BSession]:
    """The session's E2B backend, with the SDKs' environment pointed at it until the session ends."""
    config = request.config
    backend = config.getoption("--e2b-backend")
    session_id, worker_id = config.stash[_session_id], _worker_id(config)
    tags = {SESSION_KEY: session_id, WORKER_KEY: worker_id}
    if backend == "cloud":
        if not os.environ.get("E2B_API_KEY"):
            pytest.fail("--e2b-backend=cloud needs E2B_API_KEY in the environment", pytrace=False)
        session = E2BSession("cloud", {}, False, None, session_id, worker_id, tags)
        yield session
        _kill_tagged(session, tags)
        return
    state = _local_backend(config.stash[_shared_dir])
    session = E2BSession("local", dict(state["env"]), state["started"], state["pid"], session_id, worker_id, tags)
    saved = {key: os.environ.get(key) for key in session.env}
    os.environ.update(session.env)
    try:
        yield session
        # What the fixtures created and the test did not kill, on a server that may outlive the run.
        _kill_tagged(session, tags)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _kill_tagged(session: E2BSession, metadata: dict[str, str]) -> list[Any]:
    """Kill the sandboxes whose metadata includes `metadata`; their infos."""
    from e2b import Sandbox

    found = _list(Sandbox, metadata, session.sdk)
    for info in found:
        with contextlib.suppress(Exception):
            Sandbox.kill(info.sandbox_id, **session.sdk)
    return found


def _options(request: pytest.FixtureRequest) -> tuple[dict[str, Any], bool]:
    """Sandbox.create keyword arguments from the `e2b` marker and the fixture's parameter, and the SDK to use."""
    options: dict[str, Any] = {}
    marker = request.node.get_closest_marker("e2b")
    if marker is not None:
        options.update(marker.kwargs)
        if marker.args:
            options["template"] = marker.args[0]
    param = getattr(request, "param", None)
    if isinstance(param, str):
        options["template"] = param
    elif isinstance(param, dict):
        options.update(param)
    options.pop("leak_check", None)
    code_interpreter = options.pop("code_interpreter", None)
    options.setdefault("template", "base")
    if code_interpreter is None:
        code_interpreter = "code-interpreter" in options["template"]
    return options, bool(code_interpreter)


def _tags(session: E2BSession, request: pytest.FixtureRequest) -> dict[str, str]:
    return {**session.tags, TEST_KEY: request.node.nodeid}


@pytest.fixture
def e2b_sandbox(request: pytest.FixtureRequest, e2b_session: E2BSession) -> Iterator[Any]:
    """A ready sandbox, killed after the test (`e2b_code_interpreter.Sandbox` for a code interpreter template)."""
    options, code_interpreter = _options(request)
    if code_interpreter:
        from e2b_code_interpreter import Sandbox
    else:
        from e2b import Sandbox
    options["metadata"] = {**options.get("metadata", {}), **_tags(e2b_session, request)}
    sandbox = Sandbox.create(**options)
    try:
        yield sandbox
    finally:
        with contextlib.suppress(Exception):
            sandbox.kill()


try:
    import pytest_asyncio
except ImportError:  # the async fixture needs pytest-asyncio's event loop
    pytest_asyncio = None

if pytest_asyncio is not None:
    @pytest_asyncio.fixture
    async def e2b_async_sandbox(request: pytest.FixtureRequest, e2b_session: E2BSession) -> AsyncIterator[Any]:
        """A ready `AsyncSandbox`, killed after the test (the code interpreter SDK's for its templates)."""
        options, code_interpreter = _options(request)
        if code_interpreter:
            from e2b_code_interpreter import AsyncSandbox
        else:
            from e2b import AsyncSandbox
        options["metadata"] = {**options.get("metadata", {}), **_tags(e2b_session, request)}
        sandbox = await AsyncSandbox.create(**options)
        try:
            yield sandbox
        finally:
            with contextlib.suppress(Exception):
                await sandbox.kill()


def _leak_check_wanted(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("e2b")
    if marker is not None and marker.kwargs.get("leak_check") is not None:
        return bool(marker.kwargs["leak_check"])
    return bool(request.config.getoption("--e2b-leak-check"))


@contextlib.contextmanager
def _tag_creations(tags: dict[str, str]) -> Iterator[None]:
    """Add `tags` to the metadata of every sandbox this process creates meanwhile (both SDKs create through these)."""
    from e2b.sandbox_async.sandbox_api import SandboxApi as AsyncSandboxApi
    from e2b.sandbox_sync.sandbox_api import SandboxApi

    sync_create = SandboxApi.__dict__["_create_sandbox"].__func__
    async_create = AsyncSandboxApi.__dict__["_create_sandbox"].__func__

    def tagged_sync(cls: Any, *args: Any, metadata: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return sync_create(cls, *args, metadata={**(metadata or {}), **tags}, **kwargs)

    async def tagged_async(cls: Any, *args: Any, metadata: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return await async_create(cls, *args, metadata={**(metadata or {}), **tags}, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SandboxApi, "_create_sandbox", classmethod(tagged_sync))
        patch.setattr(AsyncSandboxApi, "_create_sandbox", classmethod(tagged_async))
        yield


@pytest.fixture(autouse=True)
def _e2b_leak_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """With the leak check on: fail the test if sandboxes it created are still running after its teardown."""
    if not _leak_check_wanted(request):
        yield
        return
    session: E2BSession = request.getfixturevalue("e2b_session")
    tags = _tags(session, request)
    with _tag_creations(tags):
        yield
    leaked = _kill_tagged(session, tags)
    if leaked:
        lines = [f"  {info.sandbox_id} template={info.template_id or info.name} metadata={info.metadata}"
                 for info in leaked]
        pytest.fail(f"{request.node.nodeid} left {len(leaked)} sandbox(es) running (now killed):\n"
                    + "\n".join(lines), pytrace=False)
