"""Each sandbox's own disk: a sparse ext4 image on a loop device, mounted on the host.

The overlay's upper and work directories live on it, so a sandbox can use exactly its disk size
and inode count: a write past them fails with ENOSPC inside the sandbox, and the host loses at most
that much space (the image is sparse, and `discard` gives the blocks of deleted files back).

An image starts as a sparse copy of a template formatted once per size (a copy of a few hundred
KiB of metadata is much cheaper than mkfs). The loop device is attached with autoclear, so it goes
away by itself when the filesystem's last mount does: unmounting is the whole teardown. The mount
lives in the host's mount namespace and survives a restart of the server; after a reboot of the
machine `ensure_mounted` attaches the image again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

from e2b_local.isolation import mounts

# ioctls of <linux/loop.h> and <linux/ext4.h>.
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 2
# struct loop_config: fd, block_size, struct loop_info64 (232 bytes), 8 reserved u64.
LOOP_INFO64_FLAGS_OFFSET = 52
LOOP_CONFIG_SIZE = 4 + 4 + 232 + 64
# Bytes of disk per inode: ext4's default ratio, so the inode count grows with the disk size.
BYTES_PER_INODE = 16384
# The smallest disk we format: below this, ext4's fixed overhead (journal, tables) dominates.
MIN_DISK_MB = 16
# Attempts to claim a free loop device when other processes claim them at the same time.
LOOP_ATTEMPTS = 20

_template_lock = threading.Lock()


def _mkfs_command(image: Path, prezeroed: bool) -> list[str]:
    # No reserved blocks (root and user see the same limit), a 4 MiB journal (the smallest ext4
    # allows; it keeps the files consistent across a crash of the machine), no resize inode (its
    # reserved blocks would be written out, 4 MiB more to copy per sandbox), and nothing written that
    # a sparse file already reads as zeros (`assume_storage_prezeroed` needs e2fsprogs 1.47).
    extended = "lazy_itable_init=1,lazy_journal_init=1,nodiscard" + (",assume_storage_prezeroed=1" * prezeroed)
    return ["mkfs.ext4", "-q", "-F", "-b", "4096", "-i", str(BYTES_PER_INODE), "-m", "0", "-J", "size=4",
            "-O", "^resize_inode", "-E", extended, str(image)]


def template_image(directory: Path, size_mb: int) -> Path:
    """The formatted, empty image of `size_mb` MiB that sandbox disks are copied from (made once)."""
    size_mb = max(size_mb, MIN_DISK_MB)
    template = directory / f"ext4-{size_mb}m.img"
    if template.exists():
        return template
    with _template_lock:
        if template.exists():
            return template
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = directory / f".{template.name}.{os.getpid()}"
        with open(staging, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        for prezeroed in (True, False):
            # Success is read from the output: the server's reaper (waitpid(-1)) may take mkfs's exit status.
            result = subprocess.run(["sh", "-c", '"$@" && echo formatted', "sh", *_mkfs_command(staging, prezeroed)],
                                    capture_output=True, text=True)
            if result.stdout.strip() == "formatted":
                break
        else:
            staging.unlink(missing_ok=True)
            raise RuntimeError(f"formatting a sandbox disk failed: {result.stderr.strip()[-1000:]}")
        os.chmod(staging, 0o600)
        os.rename(staging, template)
    return template


def sparse_copy(source: Path, destination: Path) -> None:
    """Copy `source` to a new file `destination`, leaving its holes as holes."""
    with open(source, "rb") as src, open(destination, "xb") as dst:
        os.fchmod(dst.fileno(), 0o600)
        size = os.fstat(src.fileno()).st_size
        dst.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            position = start
            while position < end:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), end - position, position, position)
                if copied == 0:
                    break
                position += copied
            offset = end


class LoopDevice:
    """A loop device attached to an image; detaches itself when closed unless something mounted it."""

    def __init__(self, image: Path) -> None:
        backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
        try:
            with open("/dev/loop-control", "rb", buffering=0) as control:
                for _ in range(LOOP_ATTEMPTS):
                    number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                    path = f"/dev/loop{number}"
                    fd = _open_device(path)
                    config = bytearray(LOOP_CONFIG_SIZE)
                    struct.pack_into("=II", config, 0, backing, 0)
                    struct.pack_into("=I", config, 8 + LOOP_INFO64_FLAGS_OFFSET,
                                     LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO)
                    try:
                        fcntl.ioctl(fd, LOOP_CONFIGURE, bytes(config))
                    except OSError as exc:
                        os.close(fd)
                        if exc.errno == errno.EBUSY:  # claimed by someone else since GET_FREE
                            continue
                        raise
                    self.path, self.fd = path, fd
                    return
        finally:
            os.close(backing)
        raise RuntimeError("no free loop device for the sandbox's disk")

    def close(self) -> None:
        """Let go of the device: it detaches now, or when the filesystem mounted from it is unmounted."""
        os.close(self.fd)


def _open_device(path: str) -> int:
    # devtmpfs creates the node as the kernel adds the device; give it a moment.
    deadline = time.monotonic() + 2.0
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


class SandboxDisk:
    """The image `image` and where it is mounted, `mountpoint`."""

    def __init__(self, image: Path, mountpoint: Path) -> None:
        self.image = image
        self.mountpoint = mountpoint

    def create(self, templates: Path, size_mb: int) -> None:
        """Make a fresh, empty disk of `size_mb` MiB and mount it."""
        sparse_copy(template_image(templates, size_mb), self.image)
        self.mountpoint.mkdir(mode=0o700, exist_ok=True)
        self.mount()

    def is_mounted(self) -> bool:
        return os.path.ismount(self.mountpoint)

    def ensure_mounted(self) -> None:
        """Mount the disk again if it is not (the machine was restarted since)."""
        if not self.is_mounted():
            self.mount()

    def mount(self) -> None:
        """Attach the image to a loop device and mount it at the mount point (nodev, nosuid)."""
        loop = LoopDevice(self.image)
        try:
            # discard: blocks of deleted files go back to the host; the inode tables need no zeroing.
            mounts.mount(loop.path, str(self.mountpoint), "ext4",
                         mounts.MS_NODEV | mounts.MS_NOSUID | mounts.MS_NOATIME, "discard,noinit_itable")
        finally:
            loop.close()  # from here on the mount holds the device; unmounting it releases it

    def release(self, discard_data: bool = False) -> None:
        """Unmount the disk; its loop device goes with it. With `discard_data`, unwritten data is dropped.

        The files are about to be deleted with `discard_data`: a shutdown first saves writing back
        what the sandbox left in the page cache.
        """
        if not self.is_mounted():
            return
        if discard_data:
            with contextlib.suppress(OSError):
                fd = os.open(self.mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("=I", EXT4_GOING_FLAGS_NOLOGFLUSH))
                finally:
                    os.close(fd)
        mounts.unmount(self.mountpoint)

    def usage(self) -> tuple[int, int]:
        """(bytes used, bytes in total) of the disk's filesystem, as `df` inside the sandbox shows them."""
        if not self.is_mounted():  # the mount point alone would report the host's filesystem
            raise OSError(errno.ENOENT, f"{self.mountpoint} is not mounted")
        st = os.statvfs(self.mountpoint)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize
