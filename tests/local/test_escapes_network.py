"""Attacks on the host through a sandbox's network, its agent socket and the kernel's per-user limits.

Each test does what an attacker inside a sandbox (as root unless said otherwise) would try, and
checks both that it fails there and that nothing on the host side noticed a thing: listeners the
test owns record every connection they get.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from e2b import Sandbox

from e2b_local.isolation.owners import OWNER_BASE, OWNER_COUNT
from local.nethost import namespaced_host
from local.sandbox_helpers import registry_key, run_as


def run_python(sandbox: Sandbox, code: str, user: str = "root") -> str:
    path = f"/tmp/attack-{uuid.uuid4().hex}.py"
    sandbox.files.write(path, code)
    _, out = run_as(sandbox, f"python3 {path}", user=user)
    return out


class Listener:
    """A TCP listener on the host that records who connected."""

    def __init__(self, address: str) -> None:
        self.sock = socket.create_server((address, 0))
        self.port = self.sock.getsockname()[1]
        self.connections: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.connections.append(peer)
            with contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[dict[str, Listener]]:
    """Host listeners on loopback, on a second loopback address, and on every address."""
    made = {"loopback": Listener("127.0.0.1"), "loopback2": Listener("127.0.0.2"), "any": Listener("0.0.0.0")}
    yield made
    for listener in made.values():
        listener.close()


def _host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the default route's source
        return s.getsockname()[0]


@pytest.fixture(scope="module")
def sbx(e2b_server) -> Iterator[Sandbox]:
    sandbox = Sandbox.create()
    yield sandbox
    sandbox.kill()


RAW_FRAMES = r'''
import errno, json, socket, struct, sys

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def syn_frame(src_mac, dst, port):
    src = socket.inet_aton("10.0.2.100")
    dst_ip = socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", 40000, port, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst_ip + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst_ip)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    gateway_mac = bytes.fromhex("52550a000202")  # slirp4netns's gateway, 10.0.2.2
    return gateway_mac + src_mac + b"\x08\x00" + ip + tcp

targets = json.loads(sys.argv[1])
report = {}
kinds = {
    "packet_raw": (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)),
    "packet_dgram": (socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800)),
    "inet_raw": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
    "vsock": (40, socket.SOCK_STREAM, 0),
}
for name, args in kinds.items():
    try:
        s = socket.socket(*args)
    except OSError as exc:
        report[name] = errno.errorcode.get(exc.errno, str(exc.errno))
        continue
    report[name] = "opened"
    if name == "packet_raw":
        s.bind(("tap0", 0))
        mac = open("/sys/class/net/tap0/address").read().strip()
        for dst, port in targets:
            for _ in range(3):
                s.send(syn_frame(bytes.fromhex(mac.replace(":", "")), dst, port))
print(json.dumps(report))
'''


def test_raw_frames_and_raw_sockets_cannot_be_made(sbx: Sandbox, listeners: dict[str, Listener],
                                                   e2b_server) -> None:
    api_port = int(e2b_server.url.rsplit(":", 1)[1])
    targets = [("127.0.0.1", listeners["loopback"].port), ("127.0.0.2", listeners["loopback2"].port),
               ("0.0.0.0", listeners["any"].port), ("127.0.0.1", api_port)]
    sbx.files.write("/tmp/frames.py", RAW_FRAMES)
    for user in ("root", "user"):
        _, out = run_as(sbx, f"python3 /tmp/frames.py '{json.dumps(targets)}'", user=user)
        report = json.loads(out.strip().splitlines()[-1])
        assert "opened" not in report.values(), report
    _, caps = run_as(sbx, "grep CapEff /proc/self/status")
    effective = int(caps.split()[-1], 16)
    assert not effective & (1 << 13), "CAP_NET_RAW must not be held by sandbox root"
    assert not effective & (1 << 12), "CAP_NET_ADMIN must not be held by sandbox root"
    assert all(not listener.connections for listener in listeners.values())


def test_host_addresses_and_link_local_are_refused(sbx: Sandbox, listeners: dict[str, Listener]) -> None:
    host = _host_address()
    port = listeners["any"].port
    urls = [f"http://{host}:{port}/", f"http://10.0.2.2:{port}/", f"http://0.0.0.0:{port}/",
            f"http://127.0.0.1:{listeners['loopback'].port}/", "http://169.254.169.254/"]
    for user in ("user", "root"):
        for url in urls:
            code, out = run_as(sbx, f"curl -sS --noproxy '*' -m 5 -o /dev/null -w '%{{http_code}}' {url}", user=user)
            assert code != 0, f"{url} answered {out} for {user}"
    assert all(not listener.connections for listener in listeners.values())


def test_the_host_refuses_whatever_a_sandbox_network_stack_asks_for(listeners: dict[str, Listener]) -> None:
    """The outside enforcement itself: a process on the host holding a sandbox owner uid, as slirp4netns does."""
    uid = OWNER_BASE + OWNER_COUNT - 1
    host = _host_address()
    for address, port in [("127.0.0.1", listeners["loopback"].port), ("127.0.0.2", listeners["loopback2"].port),
                          (host, listeners["any"].port), ("0.0.0.0", listeners["any"].port)]:
        assert not _connects_as(uid, address, port), address
    assert all(not listener.connections for listener in listeners.values())


def _connects_as(uid: int, address: str, port: int) -> bool:
    """Whether a host process running as `uid` (as a sandbox's slirp4netns does) can open a TCP connection."""
    result = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "timeout", "5",
                             "bash", "-c", f"exec 3<>/dev/tcp/{address}/{port} && echo connected"],
                            capture_output=True, text=True, timeout=30)
    return "connected" in result.stdout


def _owner_of(server_home: Path, sandbox_id: str) -> int:
    return int((server_home / "sandboxes" / registry_key(server_home, sandbox_id) / "owner").read_text())


def test_deny_rules_hold_outside_the_sandbox(e2b_server) -> None:
    with namespaced_host() as target:
        address = target.split(":")[0]
        with Sandbox.create(network={"deny_out": [address]}) as sandbox:
            code, _ = run_as(sandbox, f"curl -sS --noproxy '*' -m 5 -o /dev/null http://{target}/", user="root")
            assert code != 0
            owner = _owner_of(e2b_server.home, sandbox.sandbox_id)
            assert not _connects_as(owner, address, int(target.split(":")[1]))
        with Sandbox.create() as open_sandbox:
            code, _ = run_as(open_sandbox, f"curl -sS --noproxy '*' -m 10 -o /dev/null http://{target}/", user="user")
            assert code == 0, "a sandbox without rules reaches a test host that is not this host"


def test_a_symlinked_agent_socket_is_never_followed(sbx: Sandbox, tmp_path: Path) -> None:
    trap_path = tmp_path / "host.sock"
    trap = socket.socket(socket.AF_UNIX)
    trap.bind(str(trap_path))
    trap.listen(8)
    trap.settimeout(0.5)
    try:
        _, out = run_as(sbx, "ls -a /.e2b/run; for f in agent.sock agent.log; do rm -rf /.e2b/run/$f; "
                             f"ln -s {trap_path} /.e2b/run/$f; done; ls -l /.e2b/run")
        assert "agent.sock ->" in out
        # More requests at once than the server keeps idle connections for, so that it opens new ones.
        with ThreadPoolExecutor(16) as pool:
            outputs = list(pool.map(lambda n: sbx.commands.run(f"sleep 0.5; echo still-mine-{n}").stdout.strip(),
                                    range(32)))
        assert outputs == [f"still-mine-{n}" for n in range(32)]
        sbx.files.write("/tmp/x.txt", "data")
        assert sbx.files.read("/tmp/x.txt") == "data"
        with pytest.raises(TimeoutError):
            trap.accept()
    finally:
        trap.close()


@contextlib.contextmanager
def _in_background(sandbox: Sandbox, commands: list[tuple[str, str]]) -> Iterator[None]:
    """Run each (command, user) in the background for the block's duration; killed after it."""
    handles = [sandbox.commands.run(command, background=True, user=user) for command, user in commands]
    try:
        yield
    finally:
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.kill()


def _report(sandbox: Sandbox, path: str) -> str:
    """What a background attack wrote to `path`, once it has."""
    out = sandbox.commands.run(f"for i in $(seq 600); do [ -s {path} ] && break; sleep 0.1; done; cat {path}",
                               timeout=90)
    return out.stdout


def _inotify_instances_left() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        return False
    os.close(fd)
    return True


INOTIFY_HOG = r'''
import ctypes, os, time, sys
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init1(0)
    if fd < 0:
        break
    fds.append(fd)
with open(sys.argv[2], "w") as f:
    f.write(f"{len(fds)} {ctypes.get_errno()}")
time.sleep(float(sys.argv[1]))
'''


def test_inotify_exhaustion_stays_inside_one_sandbox(e2b_server) -> None:
    with Sandbox.create() as hog, Sandbox.create() as neighbour:
        hog.files.write("/tmp/hog.py", INOTIFY_HOG)
        with _in_background(hog, [(f"python3 /tmp/hog.py 60 /tmp/hog-{user}", user) for user in ("root", "user")]):
            # Both hog processes have taken every instance the sandbox may have.
            for user in ("root", "user"):
                _, err = _report(hog, f"/tmp/hog-{user}").split()
                assert int(err) == 24  # EMFILE: the sandbox's own limit
            assert _inotify_instances_left(), "the host's root still gets inotify instances"
            out = run_python(neighbour, "import ctypes; libc = ctypes.CDLL(None, use_errno=True);"
                                        "fds = [libc.inotify_init1(0) for _ in range(64)];"
                                        "print(min(fds) >= 0)", user="user")
            assert out.strip() == "True", out


FILE_HOG = r'''
import os, resource, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard * 4, hard * 4))
    raised = "raised"
except (ValueError, OSError):
    raised = "kept"
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
count = len(fds)
os.close(fds.pop())  # room for the report itself
with open(sys.argv[2], "w") as f:
    f.write(f"{count} {hard} {raised}")
time.sleep(float(sys.argv[1]))
'''


def test_open_files_are_capped_per_process_and_the_host_keeps_its_own(e2b_server) -> None:
    with Sandbox.create() as hog, Sandbox.create() as neighbour:
        hog.files.write("/tmp/files.py", FILE_HOG)
        with _in_background(hog, [(f"python3 /tmp/files.py 30 /tmp/files-{n}", "root") for n in range(4)]):
            for n in range(4):
                opened, hard, raised = _report(hog, f"/tmp/files-{n}").split()
                assert raised == "kept", "sandbox root may not raise its open-files limit"
                assert int(opened) <= int(hard)
            with open(os.devnull) as f:
                assert f.readable()
            out = run_python(neighbour, "import os; fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(1000)];"
                                        "print(len(fds))", user="user")
            assert out.strip() == "1000"


def test_mountinfo_shows_no_host_path(sbx: Sandbox, e2b_server) -> None:
    import e2b_local

    host_paths = [str(e2b_server.home), str(Path(e2b_local.__file__).parent), os.environ.get(
        "E2B_LOCAL_ROOTFS", "/var/tmp/e2b-local-rootfs")]
    for user in ("root", "user"):
        _, out = run_as(sbx, "cat /proc/self/mountinfo /proc/1/mountinfo 2>/dev/null", user=user)
        assert "/.e2b/base" in out
        for path in host_paths:
            assert path not in out, f"{path} appears in the sandbox's mountinfo"
