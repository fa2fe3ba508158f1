"""Linux system calls that Python's standard library does not wrap, for both sides of e2b_local.

Namespaces, mounts, capabilities and the seccomp filter: what the launcher uses to stage a sandbox
on the host, and what a zygote's fork uses to turn itself into a sandbox's agent. Each wrapper raises
OSError naming what failed. It imports nothing of e2b_local, so either side may use it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource

# From <sched.h>.
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# From <sys/mount.h>.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# From <linux/prctl.h>, <linux/capability.h> and <linux/seccomp.h>.
PR_SET_DUMPABLE = 4
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
SECCOMP_MODE_FILTER = 2
_CAPABILITY_VERSION_3 = 0x20080522
# A seccomp program is an array of struct sock_filter, 8 bytes each.
BPF_INSTRUCTION_SIZE = 8

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """mount(2)."""
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()),
           f"mount {fstype or source} on {target}")


def umount(target: str, flags: int = MNT_DETACH, missing_ok: bool = False) -> None:
    """umount2(2); with `missing_ok`, nothing mounted at `target` (or no `target`) is not an error."""
    if _libc.umount2(target.encode(), flags) != 0:
        err = ctypes.get_errno()
        if not (missing_ok and err in (errno.EINVAL, errno.ENOENT)):
            raise OSError(err, f"unmounting {target}: {os.strerror(err)}")


def close_descriptors_but(keep: set[int]) -> None:
    """Close every descriptor of this process that is not in `keep`.

    Ranges are closed without listing /proc/self/fd: each entry listed there becomes a dentry and an
    inode charged to the caller's memory cgroup, kept until memory runs short. The bound is the soft
    limit on open files, which no descriptor opened under it exceeds: call this before lowering it.
    """
    low = 0
    for fd in [*sorted(keep), resource.getrlimit(resource.RLIMIT_NOFILE)[0]]:
        # An empty range must not reach close_range(2): Python passes it as (low, low - 1), and a
        # last descriptor of -1 is the largest there is.
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)


def unshare(flags: int) -> None:
    """unshare(2)."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, kind: int) -> None:
    """setns(2): join the namespace `fd` refers to."""
    _check(_libc.setns(fd, kind), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2), which the C library does not wrap."""
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown system call number on {platform.machine()}")
    _check(_libc.syscall(number, new_root.encode(), put_old.encode()), "pivot_root")


def prctl(option: int, arg2: int = 0, arg3: int = 0, what: str = "prctl") -> None:
    """prctl(2) with integer arguments."""
    _check(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           what)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def last_capability() -> int:
    """The highest capability number this kernel knows (the bounding set refuses to read past it)."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_READ, ctypes.c_ulong(cap + 1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)) >= 0:
        cap += 1
    return cap


def drop_bounding(keep: set[int], last_cap: int) -> None:
    """Remove every capability up to `last_cap` but `keep` from the bounding set, for good."""
    for cap in range(last_cap + 1):
        if cap not in keep:
            prctl(PR_CAPBSET_DROP, cap, what=f"dropping capability {cap}")


def capset(permitted: set[int], inheritable: set[int]) -> None:
    """Set this thread's permitted and effective sets to `permitted`, its inheritable set to `inheritable`."""
    permitted_mask, inheritable_mask = (sum(1 << cap for cap in caps) for caps in (permitted, inheritable))
    data = (_CapData * 2)()
    for index in range(2):
        shift = 32 * index
        data[index].effective = data[index].permitted = (permitted_mask >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable_mask >> shift) & 0xFFFFFFFF
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def set_capabilities(caps: set[int], last_cap: int) -> None:
    """Make `caps` this thread's bounding, permitted, effective, inheritable and ambient sets.

    What `bwrap --cap-add` gives a process running as root of its user namespace. The bounding set
    loses every other capability up to `last_cap` for good.
    """
    drop_bounding(caps, last_cap)
    capset(caps, caps)
    for cap in sorted(caps):
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, what=f"raising ambient capability {cap}")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(program: bytes) -> None:
    """Set no_new_privs and install the seccomp filter `program` (BPF), as `bwrap --seccomp` does."""
    if not program or len(program) % BPF_INSTRUCTION_SIZE:
        raise OSError(errno.EINVAL, "seccomp: the filter is not a whole BPF program")
    prctl(PR_SET_NO_NEW_PRIVS, 1, what="setting no_new_privs")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // BPF_INSTRUCTION_SIZE, ctypes.cast(buffer, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "loading the seccomp filter")


# From <asm-generic/mman-common.h>.
MADV_MERGEABLE = 12


def mark_mergeable() -> int:
    """Let KSM merge the private anonymous memory this process has now (heap, arenas); the bytes marked.

    The mark stays with each mapping, and forks inherit it; memory mapped later is not marked.
    """
    marked = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
            if fields[1] != "rw-p" or name not in ("", "[heap]"):
                continue
            low, high = (int(x, 16) for x in fields[0].split("-"))
            _check(_libc.madvise(ctypes.c_void_p(low), ctypes.c_size_t(high - low), MADV_MERGEABLE),
                   "marking memory mergeable")
            marked += high - low
    return marked
