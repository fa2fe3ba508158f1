"""The sandbox seccomp filter, loaded into a child process of the test (no root needed: no_new_privs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from e2b_local.isolation.seccomp import compiled_filter

# Loads the filter into this child only, then reports the errno of each call the filter governs.
PROBE = r"""
import ctypes, errno, json, os, socket
from e2b_local.isolation.seccomp import build_filter

build_filter().load()
libc = ctypes.CDLL(None, use_errno=True)
out = {}

def record(name, result):
    out[name] = 0 if result >= 0 else errno.errorcode[ctypes.get_errno()]

record("unshare_user", libc.unshare(0x10000000))
record("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
record("keyctl", libc.syscall(250 if os.uname().machine == "x86_64" else 219, 0, 0, 0, 0, 0))
for name, family, kind in (("packet", 17, socket.SOCK_RAW), ("vsock", 40, socket.SOCK_STREAM),
                           ("inet", socket.AF_INET, socket.SOCK_STREAM), ("unix", socket.AF_UNIX, socket.SOCK_STREAM)):
    try:
        socket.socket(family, kind).close()
        out[name] = 0
    except OSError as exc:
        out[name] = errno.errorcode[exc.errno]
out["getpid"] = 0 if os.getpid() > 0 else "?"
pid = os.fork()
if pid == 0:
    os._exit(0)
out["fork"] = os.waitpid(pid, 0)[1]
print(json.dumps(out))
"""


def test_the_filter_refuses_the_escape_surface_and_allows_the_rest() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["unshare_user"] == "EPERM"
    assert seen["mount"] == "EPERM"
    assert seen["keyctl"] == "EPERM"
    assert seen["packet"] == "EAFNOSUPPORT"
    assert seen["vsock"] == "EAFNOSUPPORT"
    # Ordinary work goes on: sockets, processes.
    assert seen["unix"] == 0
    assert seen["getpid"] == 0
    assert seen["fork"] == 0
    assert seen["inet"] == 0


def test_the_compiled_program_replaces_an_older_one(tmp_path: Path) -> None:
    target = tmp_path / "seccomp.bpf"
    target.write_bytes(b"stale")
    assert compiled_filter(target) == target
    program = target.read_bytes()
    # A classic BPF program: whole 8-byte instructions, and more than a trivial allow-all.
    assert len(program) % 8 == 0 and len(program) > 8 * 20
    assert [p.name for p in tmp_path.iterdir()] == ["seccomp.bpf"]  # no temporary file left behind
