"""Network setup of a sandbox: loopback always, outbound internet through slirp4netns when allowed.

slirp4netns is a user-mode TCP/IP stack: the sandbox gets a tap device and every connection it makes
is re-made by slirp4netns from the host, so no host interface, route or firewall rule is touched.
`--disable-host-loopback` refuses connections to the host's 127.0.0.0/8, where our control plane listens.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess

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


def slirp4netns_path() -> str | None:
    """Where slirp4netns is installed, if it is."""
    return shutil.which("slirp4netns")


def attach_slirp4netns(pid: int) -> int:
    """Give the network namespace of `pid` outbound access; return slirp4netns's pid once it is ready."""
    binary = slirp4netns_path()
    if binary is None:
        raise RuntimeError("slirp4netns is not installed (apt-get install slirp4netns)")
    ready_r, ready_w = os.pipe()
    proc = subprocess.Popen(
        [binary, "--configure", f"--mtu={SLIRP_MTU}", "--disable-host-loopback", "--enable-sandbox",
         "--enable-seccomp", f"--ready-fd={ready_w}", str(pid), "tap0"],
        pass_fds=(ready_w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(ready_w)
    try:
        if os.read(ready_r, 1) != b"1":
            proc.kill()
            raise RuntimeError(f"slirp4netns exited ({proc.wait()}) before the network was ready")
    finally:
        os.close(ready_r)
    return proc.pid
