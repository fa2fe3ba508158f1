"""The seccomp filter every sandbox runs under, compiled once to BPF for `bwrap --seccomp`.

Namespaces already hide the host; the filter removes kernel surface a sandbox never needs and that
has a history of escapes: loading modules, kexec, BPF, perf, keyrings, io_uring, new namespaces,
mounts, handle-based opens and swap or clock changes. Denied calls fail with EPERM (or ENOSYS for
clone3, so that libc falls back to clone, whose flags the filter can inspect). Packet sockets (raw
link-layer frames; CAP_NET_RAW is gone too) and vsock sockets (a channel to the hypervisor when the
host is a VM) cannot be created at all: socket() fails with EAFNOSUPPORT, as if the kernel had none.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pyseccomp as seccomp

DENIED = (
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "bpf", "perf_event_open", "userfaultfd", "lookup_dcookie",
    "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "unshare", "setns",
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig",
    "fspick", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm",
)
# clone() flags that would create namespaces.
CLONE_NEW_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)


# Address families no sandbox may open (<linux/socket.h>).
AF_PACKET = 17
AF_VSOCK = 40
DENIED_FAMILIES = (AF_PACKET, AF_VSOCK)


def build_filter() -> seccomp.SyscallFilter:
    """The filter: allow by default, deny the calls above."""
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED:
        try:
            f.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError):
            continue  # not a syscall on this architecture
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for family in DENIED_FAMILIES:
        f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family))
        f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socketpair", seccomp.Arg(0, seccomp.EQ, family))
    for bit in _bits(CLONE_NEW_FLAGS):
        f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, bit, bit))
    return f


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(mask.bit_length()) if mask & (1 << i)]


def compiled_filter(path: Path) -> Path:
    """Write the BPF program to `path` and return it.

    Written anew by every server start, so that a data directory never keeps an older filter.
    """
    # A private temporary name: several processes may compile the filter at the same moment.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".seccomp-")
    with os.fdopen(fd, "wb") as out:
        build_filter().export_bpf(out)
    os.replace(tmp, path)
    return path
