"""Root filesystems for sandboxes, built once from Debian packages and cached in the data directory.

`base` is a minimal Debian (the host's release and apt sources) with Python 3, pip, Node.js, bash,
coreutils, git and curl, a `user` account, and the in-sandbox agent's own Python packages under
/opt/e2b-local (the agent runs them from a read-only view, so nothing a user installs or removes
can break it). `code-interpreter-v1` is a layer over `base` with Jupyter kernels and the data stack.
`mcp-gateway` is a small layer over `base`, built on first use: the `mcp` library for e2b-local's MCP
gateway, `uv`/`uvx` to launch MCP servers published on PyPI (npx comes with base), and the
`mcp-gateway` command.
The build reuses the host's package configuration: apt sources and proxy, pip configuration and
the CA bundle (so it works behind an intercepting proxy), and reports progress on stderr.

Every file is owned by uid/gid + 100000 on the host, the range that sandbox user namespaces map to
0-65535, so root inside a sandbox owns its root filesystem and the host's root owns nothing in it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from e2b_local.protocol import AGENT_MOUNT, CODE_INTERPRETER_TEMPLATE, MCP_GATEWAY_TEMPLATE

# Host uid/gid that sandbox root maps to; sandbox uids 0-65535 map to HOST_ID_BASE + uid.
HOST_ID_BASE = 100_000
ID_RANGE = 65_536
# The default user of E2B templates.
USER_NAME = "user"
USER_ID = 1000
BASE_PACKAGES = (
    "python3", "python-is-python3", "python3-pip", "python3-venv", "python3-dev", "nodejs", "npm", "bash", "coreutils",
    "git", "curl", "wget", "ca-certificates", "procps", "sudo", "less", "nano", "unzip", "xz-utils",
    "iproute2", "iputils-ping", "build-essential",
)
# The agent's runtime: the SDK's generated Connect server classes, an ASGI server (with httptools' C parser:
# every request of the sandbox is parsed here), and ZeroMQ for its Jupyter client.
AGENT_REQUIREMENTS = (
    "e2b==2.63.0", "uvicorn==0.54.0", "httptools==0.9.0", "starlette==1.10.0", "pyzmq==27.3.0",
)
# What the code interpreter template adds on top of base (kernels and the data stack users expect):
# the data stack at the versions of E2B's code-interpreter template, the Python kernel at versions whose
# start-up is lighter than E2B's (about 17 MB less per idle sandbox), and JJava (the maintained IJava).
CODE_INTERPRETER_REQUIREMENTS = (
    "ipykernel==7.4.0", "ipython==9.18.1", "numpy==2.3.5", "pandas==2.2.3", "matplotlib==3.10.9",
    "pillow==12.3.0", "e2b-charts==1.0.0", "deno==2.9.8", "jjava==1.0a8",
)
# Debian packages of the code interpreter layer: R with IRkernel (and R's recommended packages, as
# E2B's r-base has them), a JDK for the Java kernel, and fonts for R's plots.
CODE_INTERPRETER_PACKAGES = (
    "r-base-core", "r-recommended", "r-cran-irkernel", "default-jdk-headless", "fonts-dejavu-core",
)
# What the MCP gateway template adds on top of base: the MCP library (in its own directory, for the
# gateway alone) and uv, whose `uvx` runs MCP servers published on PyPI.
MCP_GATEWAY_LIBRARIES = ("mcp==2.3.0",)
MCP_GATEWAY_TOOLS = ("uv==0.13.9",)
# The catalogue's npm-published servers, installed globally so that they start without a download
# (npx fetching one takes longer than the SDK waits for the gateway); the gateway falls back to npx.
MCP_GATEWAY_NPM_SERVERS = (
    "@modelcontextprotocol/server-filesystem@2026.8.31", "@modelcontextprotocol/server-memory@2026.8.31",
    "@modelcontextprotocol/server-sequential-thinking@2026.8.31",
)
MCP_GATEWAY_SITE = "opt/mcp-gateway/site-packages"
MCP_GATEWAY_COMMAND = "usr/local/bin/mcp-gateway"
# The gateway's code is e2b-local's own (e2b_local.mcp_gateway), mounted with the agent's.
MCP_GATEWAY_LAUNCHER = f"""\
#!/usr/bin/python3 -I
\"\"\"e2b-local's MCP gateway: its code is mounted with the agent's, its libraries live in this layer.\"\"\"
import sys

sys.path[:0] = ["/{MCP_GATEWAY_SITE}", "{AGENT_MOUNT}"]
from e2b_local.mcp_gateway.__main__ import main

sys.exit(main())
"""
# Bump to rebuild cached root filesystems when the recipe changes in a way the lists above do not show.
RECIPE_VERSION = "1"
# Bump to rebuild the code-interpreter layer when `_install_kernel_support` changes (its files' contents
# are part of the layer's name already).
KERNEL_SUPPORT_VERSION = "2"
# The code interpreter's kernel-side files (IPython start-up, the Bash kernel), copied into its layer.
KERNEL_FILES = Path(__file__).resolve().parent.parent / "interpreter" / "kernel_files"
# Where those files land inside the code-interpreter root filesystem.
KERNEL_SHARE = "usr/local/share/e2b-local"
# Jupyter's system-wide kernel specs directory (also where ipykernel's own spec is installed).
KERNEL_SPECS = "usr/local/share/jupyter/kernels"
# Read by the agent: a sandbox of this template starts its Python kernel as soon as the agent starts.
TEMPLATE_MARKER = "etc/e2b/template"
# Settings for every IPython kernel of the template (IPython reads /etc/ipython for all users).
IPYTHON_KERNEL_CONFIG = f"""\
# IPython kernels of the e2b-local code-interpreter template (written by e2b_local.isolation.rootfs).
c = get_config()  # noqa: F821
# E2B's extra result formats (e2b/data, e2b/chart, JSON) and start-up conveniences.
c.InteractiveShellApp.exec_files = ["/{KERNEL_SHARE}/ipython_startup.py"]
# Plain-text tracebacks, as E2B's template configures them.
c.InteractiveShell.colors = "nocolor"
# Input history in memory: a sandbox's kernel does not outlive it, and saving each cell to SQLite
# costs about 2 ms of CPU per execution.
c.HistoryManager.hist_file = ":memory:"
# ipykernel sleeps half a millisecond after every execution, before its reply, so that output flushed
# to IOPub gets there before the reply on the shell socket. The agent reads to the IOPub idle status,
# which follows every output, so the sleep only adds to each run_code (about 0.5 ms of 3).
c.Kernel._execute_sleep = 0
"""
# Where the agent's packages live inside every root filesystem.
AGENT_SITE = "opt/e2b-local/site-packages"
# Mount points inside the sandbox: the pristine base (read-only), the agent's code, its socket dir.
E2B_DIR = ".e2b"

Log = Callable[[str], None]

# The stages of a first build, in order: those of the base, then those of the code-interpreter layer.
BASE_STAGES = ("download and unpack the Debian base system (mmdebstrap)",
               "configure users, certificates and package managers",
               "install the agent's Python packages",
               "assign the sandbox user range to the base")
CODE_INTERPRETER_STAGES = ("install the code interpreter's Python packages and kernels",
                           "assign the sandbox user range to the code interpreter layer")


def _stderr(message: str) -> None:
    print(f"[e2b-local] {message}", file=sys.stderr, flush=True)


def recipe_hash(*parts: object) -> str:
    """A short digest naming a build, so that a changed recipe builds a new directory."""
    digest = hashlib.sha256(repr((RECIPE_VERSION, *parts)).encode()).hexdigest()
    return digest[:12]


class RootfsStore:
    """The cache of built root filesystems."""

    def __init__(self, directory: Path, log: Log = _stderr, stage: Log | None = None) -> None:
        self.directory = directory
        self.log = log
        # Called with each stage's title (one of BASE_STAGES, CODE_INTERPRETER_STAGES) as it starts.
        self.stage = stage or log

    def pending_stages(self) -> list[str]:
        """The stages a build would run now, for what is not cached."""
        stages = [] if self.base_path().is_dir() else list(BASE_STAGES)
        return stages + ([] if self.code_interpreter_path().is_dir() else list(CODE_INTERPRETER_STAGES))

    def base_path(self) -> Path:
        return self.directory / f"base-{recipe_hash(BASE_PACKAGES, AGENT_REQUIREMENTS)}"

    def code_interpreter_path(self) -> Path:
        files = sorted((path, hashlib.sha256(content).hexdigest()) for path, content in kernel_support_files().items())
        digest = recipe_hash(BASE_PACKAGES, AGENT_REQUIREMENTS, CODE_INTERPRETER_REQUIREMENTS, KERNEL_SUPPORT_VERSION,
                             files, CODE_INTERPRETER_PACKAGES)
        return self.directory / f"code-interpreter-v1-{digest}"

    def mcp_gateway_path(self) -> Path:
        digest = recipe_hash(BASE_PACKAGES, AGENT_REQUIREMENTS, MCP_GATEWAY_LIBRARIES, MCP_GATEWAY_TOOLS,
                             MCP_GATEWAY_NPM_SERVERS, MCP_GATEWAY_LAUNCHER)
        return self.directory / f"{MCP_GATEWAY_TEMPLATE}-{digest}"

    def layers(self, template: str) -> list[Path]:
        """The lower layers of a template, topmost first, building any that are missing."""
        base = self.ensure_base()
        if template == "base":
            return [base]
        if template == CODE_INTERPRETER_TEMPLATE:
            return [self.ensure_code_interpreter(), base]
        if template == MCP_GATEWAY_TEMPLATE:
            return [self.ensure_mcp_gateway(), base]
        raise KeyError(template)

    def is_built(self, template: str) -> bool:
        paths = {"base": [self.base_path()],
                 CODE_INTERPRETER_TEMPLATE: [self.base_path(), self.code_interpreter_path()],
                 MCP_GATEWAY_TEMPLATE: [self.base_path(), self.mcp_gateway_path()]}
        return all(p.is_dir() for p in paths[template])

    # -- base --------------------------------------------------------------------------------------
    def ensure_base(self) -> Path:
        target = self.base_path()
        if target.is_dir():
            return target
        self.directory.mkdir(parents=True, exist_ok=True)
        with _build_lock(self.directory / ".lock"):
            if target.is_dir():
                return target
            started = time.monotonic()
            work = Path(tempfile.mkdtemp(prefix=".build-base-", dir=self.directory))
            try:
                rootfs = work / "rootfs"
                self._debootstrap(rootfs)
                self.stage(BASE_STAGES[1])
                self._configure(rootfs)
                self.stage(BASE_STAGES[2])
                self._pip_install(rootfs, AGENT_REQUIREMENTS, target_dir="/" + AGENT_SITE)
                self.stage(BASE_STAGES[3])
                shift_ownership(rootfs)
                os.rename(rootfs, target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            self.log(f"base root filesystem ready in {time.monotonic() - started:.0f} s: {target}")
        return target

    def _debootstrap(self, rootfs: Path) -> None:
        suite = _host_release()
        args = [
            "mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
            "--include=" + ",".join(BASE_PACKAGES),
            *(f"--aptopt={opt}" for opt in _host_apt_proxy_options()),
            suite, str(rootfs), *[str(s) for s in _host_sources()],
        ]
        self.stage(BASE_STAGES[0])
        self.log(f"building the base root filesystem with mmdebstrap ({suite}); this takes a minute")
        _run(args, self.log)

    def _configure(self, rootfs: Path) -> None:
        _chroot(rootfs, ["useradd", "--create-home", "--uid", str(USER_ID), "--shell", "/bin/bash", USER_NAME])
        sudoers = rootfs / "etc/sudoers.d/user"
        sudoers.write_text(f"{USER_NAME} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        # pip inside a sandbox installs system-wide, as E2B templates let it.
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        _copy_host_package_config(rootfs)
        # slirp4netns serves DNS at 10.0.2.3 inside every sandbox with network access.
        (rootfs / "etc/resolv.conf").unlink(missing_ok=True)
        (rootfs / "etc/resolv.conf").write_text("nameserver 10.0.2.3\n")
        (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
        for sub in ("base", "agent", "run"):
            (rootfs / E2B_DIR / sub).mkdir(parents=True, exist_ok=True)
        (rootfs / E2B_DIR / "run").chmod(0o700)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / cache).glob("*.deb"):
                f.unlink()

    def _pip_install(self, rootfs: Path, requirements: tuple[str, ...], target_dir: str | None = None) -> None:
        where = f" into {target_dir}" if target_dir else ""
        self.log(f"installing {len(requirements)} Python packages{where}: {', '.join(requirements)}")
        cmd = ["python3", "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
               "--no-warn-script-location", "--root-user-action=ignore"]
        if target_dir:
            cmd += ["--target", target_dir]
        with _host_dns(rootfs):
            _chroot(rootfs, [*cmd, *requirements], log=self.log)

    def _apt_install(self, rootfs: Path, packages: tuple[str, ...]) -> None:
        self.log(f"installing {len(packages)} Debian packages: {', '.join(packages)}")
        apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q",
               *(f"-o{key}={value.strip(chr(34))}" for key, _, value in
                 (opt.partition(" ") for opt in _host_apt_proxy_options()))]
        # The JDK's set-up runs Java, which needs /proc.
        with _host_dns(rootfs), _mounted_proc(rootfs):
            _chroot(rootfs, [*apt, "update"])
            _chroot(rootfs, [*apt, "install", "-y", "--no-install-recommends", *packages])
            _chroot(rootfs, [*apt, "clean"])
        for lists in (rootfs / "var/lib/apt/lists").glob("*_*"):
            lists.unlink()

    # -- layers over the base ----------------------------------------------------------------------
    def _build_layer(self, target: Path, name: str, install: Callable[[Path], None],
                     before_shift: str | None = None) -> Path:
        """Build `target`, a layer over the base, once per machine: `install` runs on the merged tree.

        Builders in several processes take turns on one lock; the finished layer appears at once
        (a rename), so a reader never sees half of one.
        """
        if target.is_dir():
            return target
        base = self.ensure_base()
        with _build_lock(self.directory / ".lock"):
            if target.is_dir():
                return target
            started = time.monotonic()
            work = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=self.directory))
            layer, scratch, merged = work / "layer", work / "scratch", work / "merged"
            for d in (layer, scratch, merged):
                d.mkdir()
            try:
                _mount_overlay([base], layer, scratch, merged)
                try:
                    install(merged)
                finally:
                    subprocess.run(["umount", str(merged)], check=True)
                if before_shift is not None:
                    self.stage(before_shift)
                else:
                    self.log(f"assigning the sandbox user range to the {name} layer")
                shift_ownership(layer)
                os.rename(layer, target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            self.log(f"{name} layer ready in {time.monotonic() - started:.0f} s: {target}")
        return target

    # -- code interpreter --------------------------------------------------------------------------
    def ensure_code_interpreter(self) -> Path:
        def install(merged: Path) -> None:
            self.stage(CODE_INTERPRETER_STAGES[0])
            self._pip_install(merged, CODE_INTERPRETER_REQUIREMENTS)
            self._apt_install(merged, CODE_INTERPRETER_PACKAGES)
            _install_kernel_support(merged)

        return self._build_layer(self.code_interpreter_path(), "code interpreter", install,
                                 before_shift=CODE_INTERPRETER_STAGES[1])

    # -- MCP gateway -------------------------------------------------------------------------------
    def ensure_mcp_gateway(self) -> Path:
        def install(merged: Path) -> None:
            self._pip_install(merged, MCP_GATEWAY_LIBRARIES, target_dir="/" + MCP_GATEWAY_SITE)
            self._pip_install(merged, MCP_GATEWAY_TOOLS)
            self.log(f"installing npm packages: {', '.join(MCP_GATEWAY_NPM_SERVERS)}")
            with _host_dns(merged):
                _chroot(merged, ["npm", "install", "--global", "--no-fund", "--no-audit", "--cafile",
                                 "/etc/ssl/certs/ca-certificates.crt", *MCP_GATEWAY_NPM_SERVERS], log=self.log)
                shutil.rmtree(merged / "root/.npm", ignore_errors=True)
            command = merged / MCP_GATEWAY_COMMAND
            command.write_text(MCP_GATEWAY_LAUNCHER)
            command.chmod(0o755)

        return self._build_layer(self.mcp_gateway_path(), "MCP gateway", install)


def kernel_support_files() -> dict[str, bytes]:
    """Every file the code interpreter adds to its layer, by path relative to the root filesystem.

    Kernel specs: Python runs ipykernel with the template's own interpreter; Bash runs e2b-local's
    kernel (interrupted by SIGINT to its process group, like ipykernel); Deno's kernel takes
    interrupts as control messages (a signal would kill it) and prints without colours. R runs
    IRkernel (interrupted by SIGINT, as R's console is). Java runs JJava in one JVM (its launcher would
    start a second one), with the serial collector and a small initial heap so that an idle Java
    context costs little memory; it takes interrupts as control messages.
    """
    python = "/usr/bin/python3"
    specs = {
        "python3": {"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "Python 3", "language": "python", "interrupt_mode": "signal",
                    "env": {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}, "metadata": {"debugger": True}},
        "bash": {"argv": [python, f"/{KERNEL_SHARE}/bash_kernel.py", "-f", "{connection_file}"],
                 "display_name": "Bash", "language": "bash", "interrupt_mode": "signal"},
        "deno": {"argv": ["/usr/local/bin/deno", "jupyter", "--kernel", "--conn", "{connection_file}"],
                 "display_name": "Deno", "language": "typescript", "interrupt_mode": "message",
                 "env": {"NO_COLOR": "1"}},
        "r": {"argv": ["/usr/bin/R", "--no-echo", "--no-restore", "-e", "IRkernel::main()", "--args",
                       "{connection_file}"],
              "display_name": "R", "language": "R", "interrupt_mode": "signal"},
        "java": {"argv": ["/usr/bin/java", "-XX:+UseSerialGC", "-Xms16m", "-XX:TieredStopAtLevel=1",
                          "-Xshare:auto", "--add-opens", "jdk.jshell/jdk.jshell=ALL-UNNAMED",
                          "-jar", f"/{KERNEL_SPECS}/java/jjava.jar", "{connection_file}"],
                 "display_name": "Java", "language": "java", "interrupt_mode": "message"},
    }
    files = {f"{KERNEL_SPECS}/{name}/kernel.json": json.dumps(spec, indent=1).encode() for name, spec in specs.items()}
    for name in ("ipython_startup.py", "bash_kernel.py"):
        files[f"{KERNEL_SHARE}/{name}"] = (KERNEL_FILES / name).read_bytes()
    files["etc/ipython/ipython_kernel_config.py"] = IPYTHON_KERNEL_CONFIG.encode()
    files[TEMPLATE_MARKER] = b"code-interpreter-v1\n"
    return files


def _install_kernel_support(rootfs: Path) -> None:
    """Write the kernel specs, IPython settings, the Bash kernel and the template marker."""
    for relative, content in kernel_support_files().items():
        path = rootfs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o644)
    # matplotlib builds its font cache on first use, which would cost every sandbox about a second
    # on its first plot: build it once here, in the default user's home (as that user, whose files
    # in the base layer belong to the shifted uid already).
    user = HOST_ID_BASE + USER_ID
    subprocess.run(
        ["chroot", f"--userspec={user}:{user}", str(rootfs), "/usr/bin/env", "-i", f"HOME=/home/{USER_NAME}",
         "MPLBACKEND=Agg", "/usr/bin/python3", "-c", "import matplotlib.pyplot"],
        check=True, capture_output=True,
    )


# -- helpers ----------------------------------------------------------------------------------------
def shift_ownership(root: Path) -> None:
    """Move every file's uid/gid below 65536 into the sandbox range, keeping setuid/setgid bits."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, None]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            st = os.lstat(path)
            uid = st.st_uid + HOST_ID_BASE if st.st_uid < ID_RANGE else st.st_uid
            gid = st.st_gid + HOST_ID_BASE if st.st_gid < ID_RANGE else st.st_gid
            if (uid, gid) == (st.st_uid, st.st_gid):
                continue
            os.lchown(path, uid, gid)
            # chown clears setuid/setgid on regular files: put them back.
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))


def _mount_overlay(lowers: list[Path], upper: Path, work: Path, merged: Path) -> None:
    lowerdir = ":".join(str(p) for p in lowers)
    opts = f"lowerdir={lowerdir},upperdir={upper},workdir={work},userxattr"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)


def _host_release() -> str:
    fields = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    codename = fields.get("VERSION_CODENAME", "").strip('"')
    if not codename:
        raise RuntimeError("cannot tell the host's Debian/Ubuntu release (no VERSION_CODENAME in /etc/os-release)")
    return codename


def _host_sources() -> list[Path]:
    """The host's enabled official apt source files (third-party repositories need keys we lack)."""
    official = ("debian-archive-keyring", "ubuntu-archive-keyring")
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
                  *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    chosen = []
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            continue
        if ("signed-by" in text.lower()) and not any(k in text for k in official):
            continue
        chosen.append(path)
    return chosen


def _host_apt_proxy_options() -> list[str]:
    try:
        dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [
        line.rstrip(";").replace(" ", " ", 1)
        for line in dump.splitlines()
        if line.lower().startswith(("acquire::http::proxy ", "acquire::https::proxy "))
    ]


def _copy_host_package_config(rootfs: Path) -> None:
    """The host's CA bundle and pip configuration, so installs inside sandboxes work where the host's do."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        dest = rootfs / "etc/ssl/certs/ca-certificates.crt"
        dest.unlink(missing_ok=True)
        shutil.copyfile(bundle, dest)
    pip_conf = Path("/etc/pip.conf")
    if pip_conf.is_file():
        shutil.copyfile(pip_conf, rootfs / "etc/pip.conf")


@contextlib.contextmanager
def _host_dns(rootfs: Path):
    """Use the host's resolver while building, then put the sandbox one back."""
    resolv = rootfs / "etc/resolv.conf"
    saved = resolv.read_bytes() if resolv.exists() else b""
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    try:
        yield
    finally:
        resolv.write_bytes(saved)


@contextlib.contextmanager
def _mounted_proc(rootfs: Path):
    """A /proc inside the root filesystem while packages are set up."""
    proc = rootfs / "proc"
    proc.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False)


def _chroot(rootfs: Path, cmd: list[str], log: Log | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "http_", "https_", "HTTP_", "HTTPS_",
                                                                  "no_proxy", "NO_PROXY"))}
    env.pop("PIP_FIND_LINKS", None)  # a host directory, absent inside the chroot
    env.update(PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", HOME="/root",
               LANG="C.UTF-8")
    if Path("/etc/ssl/certs/ca-certificates.crt").exists():
        env.setdefault("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    _run(["chroot", str(rootfs), *cmd], log, env=env)


def _run(cmd: list[str], log: Log | None, env: dict[str, str] | None = None) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-40:], line]
        if log and line.startswith(("I: ", "Collecting", "Successfully", "Downloading")):
            log("  " + line[:160])
    if proc.wait() != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n" + "\n".join(tail))


@contextlib.contextmanager
def _build_lock(path: Path):
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def elf_interpreter(binary: Path) -> str:
    """The dynamic loader an ELF binary asks for (PT_INTERP), e.g. /lib64/ld-linux-x86-64.so.2."""
    data = binary.read_bytes()[:65536]
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{binary} is not a 64-bit ELF file")
    little = data[5] == 1
    order = "little" if little else "big"
    phoff = int.from_bytes(data[32:40], order)
    phentsize = int.from_bytes(data[54:56], order)
    phnum = int.from_bytes(data[56:58], order)
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off:off + 4], order) == 3:  # PT_INTERP
            start = int.from_bytes(data[off + 8:off + 16], order)
            size = int.from_bytes(data[off + 32:off + 40], order)
            return data[start:start + size].rstrip(b"\0").decode()
    raise ValueError(f"{binary} has no program interpreter")


@functools.cache
def python_loader(base_layer: Path) -> str:
    """The dynamic loader the base layer's Python asks for (a path inside the layer)."""
    # A base layer's path names its recipe, and the loader follows from the recipe: read once per layer.
    return elf_interpreter(base_layer / "usr/bin/python3")


def library_path(root: str) -> str:
    """The base layer's library directories for its loader's --library-path, the layer being at `root`."""
    triplet = machine_multiarch()
    return ":".join(f"{root}/{d}" for d in (f"lib/{triplet}", f"usr/lib/{triplet}"))


def machine_multiarch() -> str:
    """Debian's multiarch triplet for this machine (library directory names)."""
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(
        platform.machine(), f"{platform.machine()}-linux-gnu"
    )
