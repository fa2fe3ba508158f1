"""Start one sandbox: user, mount and network namespaces, the overlay root, then its agent.

Run in a process of its own, forked for each sandbox by the fork server (`forkserver`), so that the
sandbox is no child of the server's threads and outlives a restart of the server. Steps:

1. join the sandbox's cgroups (everything started from here on is limited and accounted there);
2. bind the agent's listening socket in the sandbox's host-only directory (the server connects
   there; nothing inside the sandbox can see or replace that path) and fork;
3. the child, still host root, makes a private mount namespace, mounts the overlay root
   (read-only template layers + the sandbox's private upper directory) and stages every bind source
   on a private tmpfs, then takes the sandbox's owner uid as its effective uid (keeping its
   capabilities), so that the user namespace it unshares next, with the network namespace, belongs
   to that uid, and waits;
4. the parent maps the child's uids/gids 0-65535 to the host range, attaches slirp4netns (as the
   owner uid) when the sandbox may reach the internet, and lets the child go;
5. the child becomes root of its user namespace, drops CAP_NET_ADMIN and CAP_NET_RAW for good and
   caps its open files. Then the sandbox's `Assembly` (pid, ipc and uts namespaces, private /proc
   and /dev, the seccomp filter, the agent as pid 1 on the inherited socket) is made one of two ways:
   - `fork` (the default): the child hands descriptors of its namespaces to the zygote of the base
     layer (`zygotes`), whose fork joins them, assembles the sandbox and becomes its agent with
     every module already imported; the child exits once the agent is assembled;
   - `exec`: the child executes bubblewrap, which assembles the sandbox and executes a fresh agent;
6. the parent returns `{"pid": ..., "slirp_pid": ...}` (the fork server's answer) and exits: the pid
   of the sandbox's top process (the agent when forked, bubblewrap when executed).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import uuid
from dataclasses import asdict, dataclass, field

from e2b_local import linux
from e2b_local.isolation import idmap, network
from e2b_local.isolation.cgroups import SandboxCgroup
from e2b_local.isolation.rootfs import AGENT_SITE, HOST_ID_BASE, ID_RANGE
from e2b_local.linux import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUSER,
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    PR_CAPBSET_DROP,
    PR_SET_SECUREBITS,
    mount,
)
from e2b_local.protocol import AGENT_FD_VARIABLE, AGENT_MOUNT, BASE_MOUNT, RUN_MOUNT, WORKLOAD_FD_VARIABLE
from e2b_local.zygote.assembly import Assembly, Mount

# Changing the effective uid then keeps the capabilities (see _child).
SECBIT_NO_SETUID_FIXUP = 1 << 2
# Dropped for everything in the sandbox, root included. CAP_NET_ADMIN: nothing inside needs it
# (loopback is brought up here, slirp4netns configures the tap device from outside). CAP_NET_RAW:
# packet and raw sockets would let sandbox root hand-build frames for slirp4netns.
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
DROPPED_CAPS = (CAP_NET_ADMIN, CAP_NET_RAW)
CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW"}
# Open files per process inside a sandbox (soft, hard): generous for real work, and with the pids and
# memory limits a bound on what one sandbox can take of the host's file table.
OPEN_FILES = (65_536, 65_536)


@dataclass
class LaunchSpec:
    """Everything the launcher needs, written by the server as JSON."""

    cgroup_key: str
    lowers: list[str]
    upper: str
    work: str
    merged: str
    socket: str
    log: str
    owner: int
    id_base: int
    workload_procs: str | None
    base_layer: str
    agent_package: str
    seccomp_bpf: str
    loader: str
    library_path: str
    hostname: str
    internet: bool
    agent_env: dict[str, str] = field(default_factory=dict)
    # "fork" or "exec" (see step 5 above).
    agent_start: str = "fork"
    # Whether the Python kernels may be forked too: only from layers e2b-local built itself, since a
    # kernel zygote runs the template's own Python as host root (see isolation/zygotes.py).
    fork_kernels: bool = False
    # Whether the agent and kernels forked from zygotes mark their memory mergeable, for KSM (E2B_LOCAL_MERGE_PAGES).
    merge_pages: bool = False
    # Volumes: [host directory, mount point in the sandbox], the host directory's owners in the storage range.
    volumes: list[list[str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# Inside the launcher's private mount namespace, a tmpfs holds everything bubblewrap binds in, so that
# the sandbox's root (an unprivileged uid on the host) never has to traverse the data directory's path.
STAGE = "/tmp"
STAGE_ROOT = STAGE + "/root"
STAGE_BASE = STAGE + "/base"
STAGE_AGENT = STAGE + "/agent"
STAGE_RUN = STAGE + "/run"
STAGE_EMPTY = STAGE + "/empty"
STAGE_VOLUME = STAGE + "/volume{}"
STAGE_BOOT_ID = STAGE + "/boot_id"
# Empty: where a zygote's fork assembles the sandbox (see e2b_local/zygote/assembly.py).
STAGE_SCRATCH = STAGE + "/scratch"
# The sandbox's sudo, replaced by the agent's shim (see e2b_local/agent/sudo.py).
SUDO_PATH = "/usr/bin/sudo"
SUDO_SHIM = "/agent/sudo_shim.py"
# Shown over the host's own: each sandbox has its boot id, new at each cold boot (as a VM's would be).
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
STAGE_SIZE = "16m"
STAGE_INODES = 1024


# Packages the agent imports modules of, given as bare package objects so that their __init__ does not
# run: the SDK's imports its whole client (the agent needs only the generated envd modules; it would
# double the agent's start), uvicorn's its command line (click and the process supervisors).
BARE_PACKAGES = ("e2b", "uvicorn")


def python_boot(module: str) -> str:
    """The `python -c` program that runs `module` as __main__ with the agent's import setup."""
    site_packages = BASE_MOUNT + "/" + AGENT_SITE
    return (
        "import runpy, site, sys, types;"
        f"site.addsitedir({site_packages!r});"
        f"bare = {BARE_PACKAGES!r};"
        "sys.modules.update((name, types.ModuleType(name)) for name in bare);"
        f"[setattr(sys.modules[name], '__path__', [{site_packages!r} + '/' + name]) for name in bare];"
        f"sys.path.insert(0, {AGENT_MOUNT!r});"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )


def python_command(spec: LaunchSpec, module: str) -> list[str]:
    """The base layer's Python running `module`, through the layer's own loader (paths as sandboxes see them)."""
    return [BASE_MOUNT + spec.loader, "--library-path", spec.library_path,
            BASE_MOUNT + "/usr/bin/python3", "-S", "-B", "-c", python_boot(module)]


# The agent's environment before the launcher's descriptors and the server's variables.
AGENT_ENV = {
    "PYTHONHOME": BASE_MOUNT + "/usr",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def assembly_of(spec: LaunchSpec) -> Assembly:
    """What turns the staged root into the sandbox, for bubblewrap or for a zygote's fork."""
    volumes = [Mount("bind", target, STAGE_VOLUME.format(index)) for index, (_, target) in enumerate(spec.volumes)]
    # No setuid program can raise privileges in a sandbox (no_new_privs): sudo asks the agent.
    sudo = [Mount("ro-bind", SUDO_PATH, STAGE_AGENT + SUDO_SHIM)] if os.path.isfile(STAGE_ROOT + SUDO_PATH) else []
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_files = OPEN_FILES if hard == resource.RLIM_INFINITY else tuple(min(v, hard) for v in OPEN_FILES)
    return Assembly(
        root=STAGE_ROOT,
        mounts=[
            Mount("ro-bind", BASE_MOUNT, STAGE_BASE),
            Mount("ro-bind", AGENT_MOUNT + "/e2b_local", STAGE_AGENT),
            Mount("bind", RUN_MOUNT, STAGE_RUN),
            *volumes,
            Mount("proc", "/proc"),
            Mount("ro-bind", BOOT_ID_PATH, STAGE_BOOT_ID),
            Mount("dev", "/dev"),
            *sudo,
        ],
        hostname=spec.hostname,
        dropped_caps=list(DROPPED_CAPS),
        env={**AGENT_ENV, **spec.agent_env},
        open_files=list(open_files),
    )


def bwrap_command(spec: LaunchSpec, assembly: Assembly, seccomp_fd: int, agent_fd: int,
                  workload_fd: int | None) -> list[str]:
    """The bubblewrap invocation that builds the sandbox `assembly` describes and executes its agent."""
    args = ["bwrap", "--bind", assembly.root, "/"]
    for item in assembly.mounts:
        args += [f"--{item.kind}", *([item.source] if item.source else []), item.destination]
    args += [
        # The agent is the sandbox's pid 1: the kernel then ignores SIGKILL sent to it from inside,
        # so `kill -9 -1` as root in the sandbox cannot take the agent down.
        "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts", "--hostname", assembly.hostname,
        "--cap-add", "ALL", *[a for cap in assembly.dropped_caps for a in ("--cap-drop", CAP_NAMES[cap])],
        "--seccomp", str(seccomp_fd),
        "--new-session",
        "--clearenv",
    ]
    env = {**assembly.env, AGENT_FD_VARIABLE: str(agent_fd),
           **({WORKLOAD_FD_VARIABLE: str(workload_fd)} if workload_fd is not None else {})}
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, "--chdir", assembly.cwd, "--", *python_command(spec, "e2b_local.agent")]


def _stage(spec: LaunchSpec) -> None:
    """As host root in a fresh mount namespace: mount the overlay root and stage every other mount."""
    linux.unshare(CLONE_NEWNS)
    mount("none", "/", "", MS_REC | MS_PRIVATE, "")
    # Held open so that the staging tmpfs may cover any of these paths (the data directory may be in /tmp).
    fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in
           [*spec.lowers, spec.upper, spec.work, spec.base_layer, spec.agent_package,
            *(source for source, _ in spec.volumes)]}

    def fd_path(path: str) -> str:
        return f"/proc/self/fd/{fds[path]}"

    # Bounded: /.e2b/run, which sandbox root may write, lives in it (its other entries are mount points).
    mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=755,size={STAGE_SIZE},nr_inodes={STAGE_INODES}")
    for path in (STAGE_ROOT, STAGE_BASE, STAGE_AGENT, STAGE_RUN, STAGE_EMPTY, STAGE_SCRATCH):
        os.mkdir(path)
    with open(STAGE_BOOT_ID, "w") as f:
        f.write(f"{uuid.uuid4()}\n")
    os.chmod(STAGE_BOOT_ID, 0o444)
    layer = {p: fd_path(p) for p in dict.fromkeys([*spec.lowers, spec.base_layer])}
    for index in range(len(spec.volumes)):
        os.mkdir(STAGE_VOLUME.format(index))
    if spec.id_base != HOST_ID_BASE:
        # The layers and volumes are stored owned by the storage range: shown shifted onto this server's range.
        userns = idmap.shifting_userns(HOST_ID_BASE, spec.id_base, ID_RANGE)
        try:
            for index, path in enumerate(layer):
                os.mkdir(staged := f"{STAGE}/layer{index}")
                idmap.mount_shifted(layer[path], staged, userns)
                layer[path] = staged
            for index, (source, _) in enumerate(spec.volumes):
                idmap.mount_shifted(fd_path(source), STAGE_VOLUME.format(index), userns, read_only=False)
        finally:
            os.close(userns)
    else:
        for index, (source, _) in enumerate(spec.volumes):
            mount(fd_path(source), STAGE_VOLUME.format(index), "", MS_BIND, "")
    lowers = ":".join(layer[p] for p in spec.lowers)
    mount("overlay", STAGE_ROOT, "overlay", 0,
           f"lowerdir={lowers},upperdir={fd_path(spec.upper)},workdir={fd_path(spec.work)},userxattr")
    # Read-only overlays rather than bind mounts: a bind mount shows its source's host path in the
    # sandbox's /proc/self/mountinfo, an overlay only these descriptor or staging paths.
    for source, target in ((layer[spec.base_layer], STAGE_BASE), (fd_path(spec.agent_package), STAGE_AGENT)):
        mount("overlay", target, "overlay", MS_RDONLY, f"lowerdir={source}:{STAGE_EMPTY}")
    # The agent's scratch space (kernel connection files, logs) lives in this tmpfs, charged to the
    # sandbox's memory like any tmpfs it writes, and gone with its mount namespace: nothing a sandbox
    # writes there reaches the host's disk.
    os.chown(STAGE_RUN, spec.id_base, spec.id_base)
    os.chmod(STAGE_RUN, 0o700)
    for fd in fds.values():
        os.close(fd)


def _child(spec: LaunchSpec, listener: socket.socket, ready_w: int, go_r: int, status_w: int,
           zygote: socket.socket | None, kernels: socket.socket | None) -> None:
    seccomp_fd = os.open(spec.seccomp_bpf, os.O_RDONLY)
    os.set_inheritable(seccomp_fd, True)
    listener.set_inheritable(True)
    # Opened as host root: the kernel checks a cgroup move against the opener's credentials, so the
    # agent may move the processes it starts into the workload cgroup through it, and nowhere else.
    workload_fd = None
    if spec.workload_procs is not None:
        workload_fd = os.open(spec.workload_procs, os.O_WRONLY)
        os.set_inheritable(workload_fd, True)
    log = os.open(spec.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    # A zygote's fork joins the sandbox's cgroups through these (opened as host root, like the above).
    cgroups = [os.open(d / "cgroup.procs", os.O_WRONLY) for d in SandboxCgroup(spec.cgroup_key).directories()] \
        if zygote is not None else []
    _stage(spec)
    mount_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    # Out-of-memory kills go to the sandbox's programs, never to its agent (which resets this to 0
    # for everything it starts). Needs CAP_SYS_RESOURCE, which some hosts withhold even from root;
    # there the kernel still picks the largest process, which is rarely the agent.
    with contextlib.suppress(PermissionError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")
    # The user namespace's owner is the creator's effective uid: the sandbox's own uid, so that the
    # kernel's per-user counters of everything inside are charged to it and not to host root, and so
    # that slirp4netns, running as that uid, may join the namespace. The capabilities stay (the
    # securebit) for the rest of this set-up, and the bit is cleared again inside the namespace.
    linux.prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, what="setting securebits")
    os.setresgid(-1, spec.owner, -1)
    os.setresuid(-1, spec.owner, -1)
    linux.unshare(CLONE_NEWUSER | CLONE_NEWNET)
    os.write(ready_w, b"1")
    os.close(ready_w)
    if os.read(go_r, 1) != b"1":
        os._exit(1)
    os.close(go_r)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.setgroups([])
    # Without this, a process inside that changes uid (root -> user) would keep root's capabilities.
    linux.prctl(PR_SET_SECUREBITS, 0, what="clearing securebits")
    network.bring_up_loopback()
    # Out of the bounding set too, so that no later exec (a file with capabilities, say) can regain them.
    for cap in DROPPED_CAPS:
        linux.prctl(PR_CAPBSET_DROP, cap, what=f"dropping capability {cap}")
    assembly = assembly_of(spec)
    if zygote is not None:
        namespaces = [mount_ns, *(os.open(f"/proc/self/ns/{kind}", os.O_RDONLY) for kind in ("net", "user"))]
        agent = _fork_agent(zygote, assembly, [*namespaces, listener.fileno(), log, seccomp_fd], cgroups,
                            workload_fd, kernels)
        os.write(status_w, f"pid {agent}".encode())
        os._exit(0)
    os.close(mount_ns)
    resource.setrlimit(resource.RLIMIT_NOFILE, tuple(assembly.open_files))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        os.execvp("bwrap", bwrap_command(spec, assembly, seccomp_fd, listener.fileno(), workload_fd))
    except OSError as exc:
        os.write(status_w, f"cannot run bwrap: {exc}".encode())
        os._exit(127)


def _fork_agent(zygote: socket.socket, assembly: Assembly, fds: list[int], cgroups: list[int],
                workload_fd: int | None, kernels: socket.socket | None) -> int:
    """Ask the zygote for the sandbox's agent (see e2b_local/zygote/spawn.py); the agent's host pid.

    `fds`: the mount, network and user namespaces, the agent's socket, its log and the seccomp
    filter, in the order of `ZYGOTE_REQUEST_FDS` after the answer and the spec. `kernels`: the
    template's kernel zygote, which the agent-to-be registers the sandbox with.
    """
    spec = os.memfd_create("assembly", os.MFD_CLOEXEC)
    os.write(spec, json.dumps({"assembly": assembly.to_dict(), "scratch": STAGE_SCRATCH, "cgroups": len(cgroups),
                               "workload": workload_fd is not None, "kernels": kernels is not None}).encode())
    answer_r, answer_w = os.pipe2(os.O_CLOEXEC)
    extra = [*([workload_fd] if workload_fd is not None else []), *([kernels.fileno()] if kernels is not None else [])]
    try:
        socket.send_fds(zygote, [b"agent"], [answer_w, spec, *fds, *cgroups, *extra])
    except OSError as exc:
        raise RuntimeError(f"the agent's zygote is gone: {exc}") from None
    os.close(answer_w)
    answer = _read_all(answer_r)
    pid, _, rest = answer.partition("\n")
    if not pid.startswith("pid ") or rest:
        raise RuntimeError(f"the agent's zygote could not start the agent: {rest or pid or 'no answer'}")
    return int(pid.removeprefix("pid "))


def _listen(path: str) -> socket.socket:
    """The agent's listening socket, bound at `path` in the sandbox's host-only directory."""
    directory, name = os.path.split(path)
    # Through a descriptor of the directory: Unix socket paths are limited to 108 bytes.
    dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        short = f"/proc/self/fd/{dir_fd}/{name}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(short)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(short)
        os.chmod(short, 0o600)
    finally:
        os.close(dir_fd)
    listener.listen(128)
    return listener


def launch(spec: LaunchSpec, zygote: socket.socket | None = None,
           kernels: socket.socket | None = None) -> dict[str, int]:
    """Start the sandbox described by `spec`; return the host pids of its top process and of slirp4netns.

    With `zygote` (the base layer's, for `agent_start="fork"`), the agent is forked by it, and with
    `kernels` (the template's kernel zygote) its Python kernels are too.
    """
    SandboxCgroup(spec.cgroup_key).add(os.getpid())
    listener = _listen(spec.socket)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    # Closed by the child's exec (O_CLOEXEC): end of file means bwrap started, "pid N" that a zygote's
    # fork is the agent, other text is the child's error.
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(go_w)
            os.close(status_r)
            _child(spec, listener, ready_w, go_r, status_w, zygote, kernels)
        except BaseException as exc:  # the child must never return into the parent's code
            with contextlib.suppress(OSError):
                os.write(status_w, f"{type(exc).__name__}: {exc}".encode())
        os._exit(127)
    listener.close()
    os.close(ready_w)
    os.close(go_r)
    os.close(status_w)
    if os.read(ready_r, 1) != b"1":
        raise RuntimeError(f"the sandbox process failed to create its namespaces: {_read_all(status_r)}")
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(f"0 {spec.id_base} {ID_RANGE}\n")
    slirp_log = os.path.join(os.path.dirname(spec.log), "slirp4netns.log")
    slirp_pid = network.attach_slirp4netns(pid, spec.owner, slirp_log) if spec.internet else 0
    os.write(go_w, b"1")
    os.close(go_w)
    status = _read_all(status_r)
    if status.startswith("pid "):
        pid = int(status.removeprefix("pid "))
    elif status:
        raise RuntimeError(f"the sandbox failed to start: {status}")
    return {"pid": pid, "slirp_pid": slirp_pid}


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")
