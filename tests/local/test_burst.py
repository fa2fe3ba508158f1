"""The warm pool under bursts: it grows with demand, shrinks back to its floor, serves custom templates,
and a pooled sandbox is indistinguishable from a freshly booted one."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import LocalServer, start_server, stop_server
from e2b import Sandbox, Template
from e2b_code_interpreter import Sandbox as CodeSandbox

POOL_MAX = 4
BURST = 4
# The server's DEMAND_WINDOW (30 s) and resize tick, with room for a loaded machine.
SHRINK_DEADLINE = 120.0
FILL_DEADLINE = 180.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server of its own, so that its sandbox directories are the pool's and these tests' only."""
    srv = start_server(tmp_path_factory.mktemp("e2b-burst-home"),
                       env={"E2B_LOCAL_POOL_SIZE": "1", "E2B_LOCAL_POOL_MAX": str(POOL_MAX),
                            "E2B_LOCAL_BOOT_CONCURRENCY": "3"})
    try:
        yield srv
    finally:
        stop_server(srv)


def sandbox_dirs(server: LocalServer) -> set[str]:
    """Every sandbox directory of the server: registered sandboxes and pooled ones."""
    return {p.name for p in (server.home / "sandboxes").iterdir()}


def wait_for(what: str, check: object, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def registered(server: LocalServer) -> int:
    return len(Sandbox.list(limit=100, **server.sdk).next_items())


def pooled(server: LocalServer) -> int:
    return len(sandbox_dirs(server)) - registered(server)


def test_pool_grows_after_a_burst_and_returns_to_its_floor(server: LocalServer) -> None:
    # Floor: one per built-in template (base and code-interpreter-v1).
    wait_for("the pool's floor", lambda: pooled(server) == 2, FILL_DEADLINE)
    with ThreadPoolExecutor(BURST) as pool:
        created = list(pool.map(lambda _: Sandbox.create(timeout=120, **server.sdk), range(BURST)))
    for sandbox in created:
        sandbox.kill()
    # A burst of four creates of base: its pool grows past its floor toward four (sandboxes booting
    # count too), code-interpreter's stays at one.
    wait_for("the pool to grow with demand", lambda: pooled(server) >= BURST, FILL_DEADLINE)
    assert pooled(server) <= POOL_MAX + 1
    # Nobody creates: back to the floor.
    wait_for("the pool to shrink to its floor", lambda: pooled(server) == 2, SHRINK_DEADLINE)


def fingerprint(sandbox: Sandbox) -> dict[str, object]:
    """What a sandbox's processes see of their isolation, as one command reports it."""
    script = r"""
import json, os, secrets
status = dict(l.split(':\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\t' in l)
print(json.dumps({
    'ns': {n: os.readlink('/proc/self/ns/' + n) for n in sorted(os.listdir('/proc/self/ns'))},
    'seccomp': status['Seccomp'].strip(), 'no_new_privs': status['NoNewPrivs'].strip(),
    'cap_eff': status['CapEff'].strip(), 'uid_map': open('/proc/self/uid_map').read().split(),
    'gid_map': open('/proc/self/gid_map').read().split(), 'cgroup': open('/proc/self/cgroup').read(),
    'fds': sorted(os.listdir('/proc/self/fd')), 'env': dict(os.environ), 'token': secrets.token_hex(16),
}))
"""
    sandbox.files.write("/tmp/fingerprint.py", script)
    return json.loads(sandbox.commands.run("python3 /tmp/fingerprint.py").stdout)


def same_shape(a: dict[str, object], b: dict[str, object]) -> None:
    """Two sandboxes' fingerprints: the same isolation, each with namespaces and ids of its own."""
    ns_a, ns_b = a["ns"], b["ns"]
    assert isinstance(ns_a, dict) and isinstance(ns_b, dict)
    assert sorted(ns_a) == sorted(ns_b)
    for name in ns_a:
        kind = name.removesuffix("_for_children")
        assert ns_a[name].split(":")[0] == ns_b[name].split(":")[0] == kind
    for name in ("user", "mnt", "pid", "net", "ipc", "uts"):
        assert ns_a[name] != ns_b[name], f"two sandboxes share a {name} namespace"
    for field in ("seccomp", "no_new_privs", "cap_eff", "fds"):
        assert a[field] == b[field], field
    assert a["seccomp"] == "2"
    for field in ("uid_map", "gid_map"):
        # Inside start and length alike; each sandbox's own host range.
        map_a, map_b = a[field], b[field]
        assert isinstance(map_a, list) and isinstance(map_b, list)
        assert (map_a[0], map_a[2]) == (map_b[0], map_b[2]) and len(map_a) == len(map_b) == 3
    assert a["cgroup"] != b["cgroup"] and str(a["cgroup"]).count("\n") == str(b["cgroup"]).count("\n")
    env_a, env_b = a["env"], b["env"]
    assert isinstance(env_a, dict) and isinstance(env_b, dict)
    own = {"E2B_SANDBOX_ID", "HOSTNAME"}
    assert {k: v for k, v in env_a.items() if k not in own} == {k: v for k, v in env_b.items() if k not in own}
    assert a["token"] != b["token"]


def key_of(server: LocalServer, sandbox_id: str) -> str:
    """The directory name of a registered sandbox, as the server's registry records it."""
    with contextlib.closing(sqlite3.connect(f"file:{server.home / 'registry.sqlite3'}?mode=ro", uri=True)) as db:
        (record,) = db.execute("SELECT record FROM sandboxes WHERE sandbox_id = ?", (sandbox_id,)).fetchone()
    return json.loads(record)["key"]


def create_timed(create: object, *args: object, **kwargs: object) -> tuple[Sandbox, float]:
    started = time.monotonic()
    sandbox = create(*args, **kwargs)  # type: ignore[operator]
    return sandbox, time.monotonic() - started


def test_pooled_sandbox_is_indistinguishable_from_a_fresh_one(server: LocalServer) -> None:
    wait_for("a pooled code-interpreter sandbox", lambda: pooled(server) >= 2, FILL_DEADLINE)
    before = sandbox_dirs(server)
    pooled_sbx, _ = create_timed(CodeSandbox.create, timeout=120, **server.sdk)
    # Without internet a create never takes a pooled sandbox: this one boots now.
    fresh_sbx, _ = create_timed(CodeSandbox.create, timeout=120, allow_internet_access=False, **server.sdk)
    try:
        # The pooled one was booting or booted before its create began; the fresh one was not.
        assert key_of(server, pooled_sbx.sandbox_id) in before
        assert key_of(server, fresh_sbx.sandbox_id) not in before
        same_shape(fingerprint(pooled_sbx), fingerprint(fresh_sbx))
        kernel = "import secrets; print(secrets.token_hex(16))"
        assert pooled_sbx.run_code(kernel).logs.stdout != fresh_sbx.run_code(kernel).logs.stdout
        fds = "import os; print(sorted(os.listdir('/proc/self/fd')))"
        assert pooled_sbx.run_code(fds).logs.stdout == fresh_sbx.run_code(fds).logs.stdout
        contexts = [c.id for s in (pooled_sbx, fresh_sbx) for c in s.list_code_contexts()]
        assert len(set(contexts)) == len(contexts) >= 2
    finally:
        pooled_sbx.kill()
        fresh_sbx.kill()


def test_custom_template_pool_is_used_and_dropped_with_the_template(server: LocalServer) -> None:
    template = Template().from_template("base").run_cmd("echo pooled-layer > /home/user/layer.txt")
    Template.build(template, "burst-pool", cpu_count=1, memory_mb=512, **server.sdk)
    wait_for("the built-in pools", lambda: pooled(server) == 2, FILL_DEADLINE)
    Sandbox.create("burst-pool", timeout=120, **server.sdk).kill()
    # In use now: the build has a pool of its own (the floor, one).
    wait_for("the template's pool", lambda: pooled(server) == 3, FILL_DEADLINE)
    before = sandbox_dirs(server)
    second, _ = create_timed(Sandbox.create, "burst-pool", timeout=120, **server.sdk)
    try:
        assert key_of(server, second.sandbox_id) in before, "the create did not take the template's pooled sandbox"
        assert second.commands.run("cat /home/user/layer.txt").stdout == "pooled-layer\n"
        info = second.get_info()
        assert (info.cpu_count, info.memory_mb) == (1, 512)
    finally:
        second.kill()
    wait_for("the template's pool to refill", lambda: pooled(server) == 3, FILL_DEADLINE)
    headers = {"X-API-Key": server.api_key}
    template_id = httpx.get(f"{server.url}/templates/aliases/burst-pool", headers=headers).json()["templateID"]
    # The delete waits for a pool boot still under way.
    assert httpx.delete(f"{server.url}/templates/{template_id}", headers=headers, timeout=300).status_code == 204
    # Gone by the time the delete answered, before the layers were.
    assert pooled(server) == 2, "the template's pooled sandbox outlived the template"
