"""A sandbox from the warm pool, or whose agent was forked from a zygote, is indistinguishable from a fresh one.

Three servers: one with the warm pool (the default), one with E2B_LOCAL_POOL_SIZE=0, both forking
their agents from a zygote, and one with no pool whose agents are executed afresh by bubblewrap
(E2B_LOCAL_AGENT_START=exec). Two code-interpreter sandboxes come from each, the pooled ones proved
pooled by their directory existing before their create. Each is observed from inside (as root, as
the default user, from its Python kernel) and from the host (its processes' cgroups and
descriptors), and the observations of the three kinds are compared with each other: namespaces,
mounts, devices, cgroups, seccomp mode, id maps, capabilities, environment, random state and open
descriptors. Each server's own id range, data directory and the sandbox's own key and id are the
only things normalised away, with descriptor numbers and mount and device ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import LocalServer, cgroup_processes, start_server, stop_server
from e2b_code_interpreter import Sandbox

from local.sandbox_helpers import registry_key

TEMPLATE = "code-interpreter-v1"
# Sandboxes of each kind: two, so that random state can be compared within a kind as well as across.
PER_KIND = 2
# How long the pool may take to have its sandbox ready again.
POOL_WAIT = 180.0
# The namespaces a sandbox must have of its own (more may be: the comparison is between the kinds).
OWN_NAMESPACES = {"user", "mnt", "pid", "net", "ipc", "uts"}
STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                 "Seccomp", "Seccomp_filters")
ENV_NAME = "POOL_ISOLATION_MARK"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Run in the sandbox by `python3`: what a process there sees of itself, and as root of the agent (pid 1).
OBSERVE = r"""
import json, os, secrets

def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in FIELDS:
                fields[key] = " ".join(value.split())
    return fields

def fds(pid):
    out = {}
    for n in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[n] = os.readlink(f"/proc/{pid}/fd/{n}")
        except OSError:
            pass
    return out

def read(path):
    with open(path) as f:
        return f.read()

data = {
    "ns": {k: os.readlink("/proc/self/ns/" + k) for k in os.listdir("/proc/self/ns")},
    "status": status("self"),
    "uid_map": read("/proc/self/uid_map").split(), "gid_map": read("/proc/self/gid_map").split(),
    "setgroups": read("/proc/self/setgroups").strip(),
    "cgroup": sorted(read("/proc/self/cgroup").splitlines()),
    "env": dict(os.environ),
    "token": secrets.token_hex(),
    "boot_id": read("/proc/sys/kernel/random/boot_id").strip(),
    "hostname": os.uname().nodename,
    "fds": fds("self"),
    "oom_score_adj": read("/proc/self/oom_score_adj").strip(),
    # Without the mount's ids and device numbers (fields 1-3), which are the kernel's to choose.
    "mounts": [" ".join(line.split()[3:]) for line in read("/proc/self/mountinfo").splitlines()],
    "dev": sorted([name, oct(os.lstat("/dev/" + name).st_mode),
                   os.readlink("/dev/" + name) if os.path.islink("/dev/" + name) else ""]
                  for name in os.listdir("/dev")),
}
if os.geteuid() == 0:
    data["agent_cmdline"] = read("/proc/1/cmdline")
    data["agent_status"] = status(1)
    data["agent_fds"] = fds(1)
    data["agent_oom_score_adj"] = read("/proc/1/oom_score_adj").strip()
print(json.dumps(data))
""".replace("FIELDS", repr(STATUS_FIELDS))

# Run as a cell in the sandbox's default Python kernel (started before the create, for a pooled one).
KERNEL_OBSERVE = r"""
import json as _json, os as _os, random as _random, secrets as _secrets
print(_json.dumps({
    "ns": {k: _os.readlink("/proc/self/ns/" + k) for k in _os.listdir("/proc/self/ns")},
    "status": {line.partition(":")[0]: " ".join(line.partition(":")[2].split())
               for line in open("/proc/self/status") if line.partition(":")[0] in FIELDS},
    "env": dict(_os.environ),
    "token": _secrets.token_hex(),
    "random": _random.getrandbits(128),
    "session": get_ipython().kernel.session.session,
    "python": {"executable": __import__("sys").executable, "argv": __import__("sys").argv,
               "path": __import__("sys").path, "cwd": _os.getcwd(), "flags": repr(__import__("sys").flags)},
    "cmdline": open("/proc/self/cmdline").read(),
    "oom_score_adj": open("/proc/self/oom_score_adj").read().strip(),
}))
""".replace("FIELDS", repr(STATUS_FIELDS))


@dataclass
class Observed:
    """What was seen of one sandbox, inside and from the host."""

    kind: str
    server: LocalServer
    sandbox: Sandbox
    key: str
    mark: str
    root: dict[str, Any] = field(default_factory=dict)
    user: dict[str, Any] = field(default_factory=dict)
    kernel: dict[str, Any] = field(default_factory=dict)
    context_id: str = ""
    # Host pid -> (its /proc/PID/cgroup lines, its descriptors' targets), for every process of the sandbox.
    host: dict[int, tuple[list[str], list[str]]] = field(default_factory=dict)

    def norm(self, text: str) -> str:
        """`text` with what is this sandbox's or this server's own by construction replaced by a name."""
        text = text.replace(str(self.server.home.resolve()), "HOME").replace(str(self.server.home), "HOME")
        text = text.replace(self.key, "KEY").replace(self.sandbox.sandbox_id, "SANDBOX_ID")
        text = text.replace(self.sandbox.sandbox_id[:8], "SANDBOX_ID8")
        text = re.sub(rf"\b{id_base(self.server)}\b", "ID_BASE", text)
        text = UUID_RE.sub("UUID", text)
        text = re.sub(r"/proc/self/fd/\d+", "/proc/self/fd/N", text)
        return re.sub(r"\[\d+\]", "[]", text)  # socket, pipe and other inode numbers


def id_base(server: LocalServer) -> int:
    """The first host id of the server's range (what sandbox root is on the host)."""
    return int((server.home / "id-range").read_text())


def host_namespaces() -> dict[str, str]:
    """The host's namespaces: pid 1's, or this process's where pid 1's may not be read (pid 1 belongs
    to a container runtime's outer namespaces); the test and the servers run in the host's."""
    try:
        return {k: os.readlink(f"/proc/1/ns/{k}") for k in os.listdir("/proc/1/ns")}
    except PermissionError:
        return {k: os.readlink(f"/proc/self/ns/{k}") for k in os.listdir("/proc/self/ns")}


def host_processes(key: str) -> set[int]:
    """Host pids of every process in the sandbox's cgroups."""
    return cgroup_processes(rf"/e2b-local/{re.escape(key)}(/|$)")


def host_view(pid: int) -> tuple[list[str], list[str]] | None:
    """A host process's cgroup lines and its descriptors' targets (None if it is gone)."""
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        targets = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    except OSError:
        return None
    return sorted(cgroups), sorted(targets)


def create(server: LocalServer, pooled: bool) -> tuple[Sandbox, str, str]:
    """A sandbox from the pool (`pooled`) or booted for its create; (sandbox, key, its env mark)."""
    deadline = time.monotonic() + POOL_WAIT
    while True:
        before = {p.name for p in (server.home / "sandboxes").iterdir()}
        mark = uuid.uuid4().hex
        sandbox = Sandbox.create(TEMPLATE, envs={ENV_NAME: mark}, timeout=900, **server.sdk)
        key = registry_key(server.home, sandbox.sandbox_id)
        if (key in before) == pooled:
            return sandbox, key, mark
        sandbox.kill()
        # A fresh boot from the pooled server: its pool sandbox was still booting. A pooled one from the
        # other server would be a failure of E2B_LOCAL_POOL_SIZE=0.
        assert pooled, "a server with E2B_LOCAL_POOL_SIZE=0 handed out a sandbox that existed before the create"
        assert time.monotonic() < deadline, "the warm pool never had a sandbox ready"
        time.sleep(1.0)


def observe(kind: str, server: LocalServer, sandbox: Sandbox, key: str, mark: str) -> Observed:
    """Everything compared below, of one sandbox."""
    seen = Observed(kind, server, sandbox, key, mark)
    execution = sandbox.run_code(KERNEL_OBSERVE)
    assert execution.error is None, execution.error
    seen.kernel = json.loads("".join(execution.logs.stdout))
    (seen.context_id,) = [c.id for c in sandbox.list_code_contexts() if c.language == "python"]
    # A workload process that keeps running, so that the host sees one of every sort of process.
    sandbox.commands.run("sleep 600", background=True)
    sandbox.files.write("/tmp/observe.py", OBSERVE)
    seen.root = json.loads(sandbox.commands.run("python3 /tmp/observe.py", user="root").stdout)
    seen.user = json.loads(sandbox.commands.run("python3 /tmp/observe.py", user="user").stdout)
    for pid in host_processes(key):
        # Bubblewrap's own process (the exec kind's top process) waits for the agent outside the
        # sandbox's namespaces: it is none of the sandbox's processes, and a forked agent has none.
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap":
                continue
        view = host_view(pid)
        if view is not None:
            seen.host[pid] = view
    return seen


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Observed]]]:
    """PER_KIND observed sandboxes of each kind: "pooled", "fresh" (both forked) and "exec"."""
    servers: list[LocalServer] = []
    sandboxes: list[Sandbox] = []
    try:
        servers.append(start_server(tmp_path_factory.mktemp("e2b-pooled")))
        servers.append(start_server(tmp_path_factory.mktemp("e2b-unpooled"), env={"E2B_LOCAL_POOL_SIZE": "0"}))
        servers.append(start_server(tmp_path_factory.mktemp("e2b-exec"),
                                    env={"E2B_LOCAL_POOL_SIZE": "0", "E2B_LOCAL_AGENT_START": "exec"}))
        out: dict[str, list[Observed]] = {"pooled": [], "fresh": [], "exec": []}
        for kind, server in zip(("pooled", "fresh", "exec"), servers, strict=True):
            for _ in range(PER_KIND):
                sandbox, key, mark = create(server, kind == "pooled")
                sandboxes.append(sandbox)
                out[kind].append(observe(kind, server, sandbox, key, mark))
        yield out
    finally:
        for sandbox in sandboxes:
            sandbox.kill()
        for server in servers:
            stop_server(server)


def each(observed: dict[str, list[Observed]]) -> list[Observed]:
    return [o for kind in observed.values() for o in kind]


def same_across_kinds(observed: dict[str, list[Observed]], fact: Any) -> Any:
    """`fact(observation)` for every sandbox; asserted equal for all of them; returns it."""
    values = {o.kind + str(i): fact(o) for kind in observed for i, o in enumerate(observed[kind])}
    first = next(iter(values.values()))
    assert all(v == first for v in values.values()), json.dumps(values, indent=1, default=sorted)
    return first


# -- namespaces ------------------------------------------------------------------------------------

def test_namespaces_are_the_same_kinds_and_each_sandbox_has_its_own(observed) -> None:
    host = host_namespaces()

    def own_kinds(o: Observed) -> dict[str, list[str]]:
        return {view: sorted(k for k, v in seen["ns"].items() if v != host.get(k))
                for view, seen in (("root", o.root), ("user", o.user), ("kernel", o.kernel))}

    kinds = same_across_kinds(observed, own_kinds)
    assert kinds["root"] == kinds["user"] == kinds["kernel"]
    assert set(kinds["root"]) >= OWN_NAMESPACES
    for kind in kinds["root"]:
        inodes = [o.root["ns"][kind] for o in each(observed)]
        assert len(set(inodes)) == len(inodes), f"sandboxes share a {kind} namespace: {inodes}"
    # Within one sandbox, everything is in the same namespaces.
    for o in each(observed):
        assert o.root["ns"] == o.user["ns"] == o.kernel["ns"]


# -- mounts and devices ----------------------------------------------------------------------------

def test_mounts_and_devices_are_the_same(observed) -> None:
    found = same_across_kinds(observed, lambda o: {view: [o.norm(m) for m in seen["mounts"]]
                                                   for view, seen in (("root", o.root), ("user", o.user))})
    assert found["root"] == found["user"]
    assert any(m.startswith("/ / ") for m in found["root"]), found["root"]  # the sandbox's own root
    devices = same_across_kinds(observed, lambda o: o.root["dev"])
    assert [name for name, _, _ in devices] == sorted(
        ["core", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
         "urandom", "zero"])


def test_agents_and_kernels_were_forked_or_executed_as_their_kind_says(observed) -> None:
    for o in each(observed):
        forked = o.kind != "exec"
        assert ("e2b_local.zygote" in o.root["agent_cmdline"]) == forked, (o.kind, o.root["agent_cmdline"])
        assert ("e2b_local.zygote.kernels" in o.kernel["cmdline"]) == forked, (o.kind, o.kernel["cmdline"])


def test_kernels_run_the_same_python_the_same_way(observed) -> None:
    found = same_across_kinds(observed, lambda o: {k: o.norm(json.dumps(v)) for k, v in o.kernel["python"].items()})
    assert json.loads(found["argv"])[1] == "-f"  # ipykernel's launcher, as `python -m` starts it


# -- cgroups ---------------------------------------------------------------------------------------

def test_every_process_is_in_its_own_sandboxs_cgroups_alike(observed) -> None:
    def memberships(o: Observed) -> list[list[str]]:
        for cgroups, _ in o.host.values():
            for line in cgroups:
                if "/e2b-local/" in line:
                    assert f"/e2b-local/{o.key}" in line, (o.kind, line)
        return sorted({tuple(o.norm(line) for line in cgroups) for cgroups, _ in o.host.values()})

    found = same_across_kinds(observed, memberships)
    # The agent's and the workload's (the kernel and commands), at least: the host did see the sandbox.
    assert found and any("e2b-local/KEY" in line for group in found for line in group)
    same_across_kinds(observed, lambda o: [o.norm(line) for line in o.root["cgroup"]])
    same_across_kinds(observed, lambda o: [o.norm(line) for line in o.user["cgroup"]])


# -- seccomp, ids, capabilities --------------------------------------------------------------------

def test_seccomp_mode_and_no_new_privs_are_the_same(observed) -> None:
    keys = ("Seccomp", "Seccomp_filters", "NoNewPrivs")

    def modes(o: Observed) -> dict[str, dict[str, str]]:
        return {view: {k: status.get(k) for k in keys} for view, status in (
            ("root", o.root["status"]), ("user", o.user["status"]), ("kernel", o.kernel["status"]),
            ("agent", o.root["agent_status"]))}

    found = same_across_kinds(observed, modes)
    assert found["user"]["Seccomp"] == "2"  # a filter is in force (the comparison is not of absent fields)


def test_id_maps_and_capabilities_are_the_same(observed) -> None:
    def credentials(o: Observed) -> dict[str, Any]:
        return {
            "maps": [o.norm(" ".join(o.root[m])) for m in ("uid_map", "gid_map")] + [o.root["setgroups"]],
            "user_maps": [o.norm(" ".join(o.user[m])) for m in ("uid_map", "gid_map")],
            **{view: {k: status.get(k) for k in STATUS_FIELDS if k.startswith(("Cap", "Uid", "Gid", "Groups"))}
               for view, status in (("root", o.root["status"]), ("user", o.user["status"]),
                                    ("kernel", o.kernel["status"]), ("agent", o.root["agent_status"]))},
        }

    found = same_across_kinds(observed, credentials)
    assert found["maps"][0].startswith("0 ID_BASE ")  # sandbox root is the server's range, for both kinds
    assert found["root"]["CapEff"] != found["user"]["CapEff"]


def test_everything_but_the_agent_is_liable_to_out_of_memory_kills(observed) -> None:
    found = same_across_kinds(observed, lambda o: {
        "root": o.root["oom_score_adj"], "user": o.user["oom_score_adj"], "kernel": o.kernel["oom_score_adj"],
        "agent": o.root["agent_oom_score_adj"]})
    assert found["root"] == found["user"] == found["kernel"] == "0", found


# -- environment -----------------------------------------------------------------------------------

def test_environment_is_the_same_with_the_create_env_vars(observed) -> None:
    def environments(o: Observed) -> dict[str, dict[str, str]]:
        out = {}
        for view, env in (("root", o.root["env"]), ("user", o.user["env"]), ("kernel", o.kernel["env"])):
            assert env.get(ENV_NAME) == o.mark, (o.kind, view, env.get(ENV_NAME))
            out[view] = {k: o.norm(v) for k, v in env.items() if k != ENV_NAME}
        return out

    found = same_across_kinds(observed, environments)
    assert found["kernel"]["E2B_SANDBOX_ID"] == "SANDBOX_ID"


# -- random state ----------------------------------------------------------------------------------

def test_no_two_sandboxes_share_random_state(observed) -> None:
    facts = {
        "command token": lambda o: [o.root["token"], o.user["token"]],
        "kernel token": lambda o: [o.kernel["token"]],
        "kernel random": lambda o: [o.kernel["random"]],
        "kernel session": lambda o: [o.kernel["session"]],
        "kernel (context) id": lambda o: [o.context_id],
        "boot id": lambda o: [o.root["boot_id"]],
        "hostname": lambda o: [o.root["hostname"]],
    }
    for name, fact in facts.items():
        values = [v for o in each(observed) for v in fact(o)]
        assert len(set(values)) == len(values), f"{name} repeats: {values}"
    for o in each(observed):
        assert o.root["boot_id"] == o.user["boot_id"]  # one boot id per sandbox, as a machine has
        assert o.root["hostname"] == o.user["hostname"]


# -- file descriptors ------------------------------------------------------------------------------

def test_no_descriptors_beyond_a_fresh_sandboxs(observed) -> None:
    def inside(o: Observed) -> dict[str, Any]:
        return {"agent": sorted({o.norm(t) for t in o.root["agent_fds"].values()}),
                "command_root": {fd: o.norm(t) for fd, t in o.root["fds"].items()},
                "command_user": {fd: o.norm(t) for fd, t in o.user["fds"].items()}}

    found = same_across_kinds(observed, inside)
    assert set(found["command_user"]) == {"0", "1", "2"}  # stdio only

    def from_host(o: Observed) -> list[str]:
        targets = {o.norm(t) for _, fds in o.host.values() for t in fds}
        # Nothing of the server's own data directory (its registry, log, key, other sandboxes).
        for target in targets:
            assert not target.startswith("HOME") or target.startswith("HOME/sandboxes/KEY/"), (o.kind, target)
        return sorted(targets)

    same_across_kinds(observed, from_host)

