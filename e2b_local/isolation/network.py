"""Network setup of a sandbox: loopback always, outbound internet through slirp4netns when allowed.

slirp4netns is a user-mode TCP/IP stack: the sandbox gets a tap device and every connection it makes
is re-made by slirp4netns from the host. It runs as the sandbox's owner uid, unprivileged on the
host, which is what the host's firewall (firewall.py) matches: whatever frames a sandbox builds, what
reaches the outside is a socket of that uid, refused there for the host's own addresses and for
everything the sandbox's rules deny. `--disable-host-loopback` also refuses slirp's 10.0.2.2 alias.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable

# ioctl numbers from <linux/sockios.h> and flags from <net/if.h>.
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
# The largest MTU slirp4netns supports; big frames make its throughput several times higher.
SLIRP_MTU = 65520
# The DNS forwarder slirp4netns offers inside the sandbox (its default 10.0.2.0/24 network).
SLIRP_DNS = "10.0.2.3"


def bring_up_loopback() -> None:
    """Set `lo` up in the current network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


TUN_DEVICE = "/dev/net/tun"
# What Debian's and Ubuntu's udev rules give the device: any user may open it, and creating a tap
# device still needs CAP_NET_ADMIN over the network namespace it lands in.
TUN_MODE = 0o666


def ensure_tun_device() -> bool:
    """Give /dev/net/tun the mode udev gives it on Debian and Ubuntu; True if it had to be changed.

    slirp4netns runs unprivileged and opens the device from inside the sandbox's user namespace;
    hosts without udev (containers, minimal VMs) leave it at 0600.
    """
    mode = os.stat(TUN_DEVICE).st_mode & 0o777
    if mode == TUN_MODE:
        return False
    os.chmod(TUN_DEVICE, TUN_MODE)
    return True


def slirp4netns_path() -> str | None:
    """Where slirp4netns is installed, if it is."""
    return shutil.which("slirp4netns")


def attach_slirp4netns(pid: int, owner: int, log: str, verify: Callable[[], bool] | None = None) -> int:
    """Give the network namespace of `pid` outbound access; return slirp4netns's pid once it is ready.

    slirp4netns runs as `owner`, the uid that owns the sandbox's user namespace: that ownership alone
    lets it join the namespace, with no privilege on the host. The namespaces are opened here, as
    host root, and handed over as descriptors; `verify`, called once they are open, confirms that
    `pid` was still the sandbox's process (a pid can be reused by an unrelated process). slirp4netns's
    own messages go to the file `log`.
    """
    binary = slirp4netns_path()
    if binary is None:
        raise RuntimeError("slirp4netns is not installed (apt-get install slirp4netns)")
    userns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    ready_r, ready_w = os.pipe()
    err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        if verify is not None and not verify():
            raise RuntimeError(f"process {pid} is no longer the sandbox's")
        # setpriv (util-linux) leaves it no capability, no way to gain one and no supplementary group.
        # slirp4netns's own --enable-sandbox needs a root parent, which is what this avoids.
        drop = ["setpriv", f"--reuid={owner}", f"--regid={owner}", "--clear-groups", "--bounding-set=-all",
                "--inh-caps=-all", "--no-new-privs"]
        proc = subprocess.Popen(
            [*drop, binary, "--configure", f"--mtu={SLIRP_MTU}", "--disable-host-loopback", "--enable-seccomp",
             f"--ready-fd={ready_w}", f"--userns-path=/proc/self/fd/{userns}", "--netns-type=path",
             f"/proc/self/fd/{netns}", "tap0"],
            pass_fds=(ready_w, userns, netns), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    except BaseException:
        os.close(ready_r)
        raise
    finally:
        os.close(ready_w)
        os.close(userns)
        os.close(netns)
        os.close(err)
    try:
        if os.read(ready_r, 1) != b"1":
            proc.kill()
            with open(log, errors="replace") as f:
                detail = f.read().strip()[-500:]
            raise RuntimeError(f"slirp4netns exited ({proc.wait()}) before the network was ready: {detail}")
    finally:
        os.close(ready_r)
    return proc.pid
