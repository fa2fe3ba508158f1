"""The server's log (stderr, which `e2b-local start` points at server.log in the data directory).

The log lives on the same disk as the registry, and the moment that disk is full is the moment its
tracebacks matter most. So the log file keeps space of its own: a reserve allocated past its end
(without changing its size), topped up as it is used. When even the reserve is used up, lines wait
in memory (a bounded amount) until they can be written, and a line says how many were lost, if any.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import stat
import threading

# Space kept allocated past the end of the log file, and when to top it up.
RESERVE = 4 * 1024 * 1024
REFILL_BELOW = RESERVE // 2
# Lines kept in memory, at most, while nothing can be written.
BACKLOG_LIMIT = 4 * 1024 * 1024
FALLOC_FL_KEEP_SIZE = 1
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


class ReservedLogHandler(logging.Handler):
    """Writes records to a descriptor; keeps a reserve of disk space there and a backlog in memory."""

    def __init__(self, fd: int = 2) -> None:
        super().__init__()
        self.fd = fd
        self._backlog: collections.deque[bytes] = collections.deque()
        self._backlog_size = 0
        self._lost = 0
        self._io_lock = threading.Lock()
        self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
        self._top_up()

    def _top_up(self) -> None:
        # Only a regular file has space to reserve (a terminal or a pipe needs none).
        if not self._regular:
            return
        st = os.fstat(self.fd)
        if st.st_blocks * 512 - st.st_size >= REFILL_BELOW:
            return
        # Fails on a full disk; what is reserved already stays.
        _libc.fallocate(self.fd, FALLOC_FL_KEEP_SIZE, st.st_size, RESERVE)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
        except Exception:
            self.handleError(record)
            return
        with self._io_lock:
            self._backlog.append(line)
            self._backlog_size += len(line)
            self._flush()
            while self._backlog_size > BACKLOG_LIMIT:
                self._backlog_size -= len(self._backlog.popleft())
                self._lost += 1

    def _flush(self) -> None:
        # Under the lock.
        if self._lost:
            note = f"({self._lost} log lines were lost: the disk was full)\n".encode()
            self._backlog.appendleft(note)
            self._backlog_size += len(note)
            self._lost = 0
        while self._backlog:
            line = self._backlog[0]
            written = self._write(line)
            if written < len(line):
                self._backlog[0] = line[written:]  # the rest waits
                self._backlog_size -= written
                return
            self._backlog.popleft()
            self._backlog_size -= len(line)
        with contextlib.suppress(OSError):
            self._top_up()

    def _write(self, data: bytes) -> int:
        """Write as much of `data` as the disk takes; how many bytes that was."""
        done = 0
        while done < len(data):
            try:
                written = os.write(self.fd, data[done:])
            except OSError:
                return done
            if written == 0:
                return done
            done += written
        return done


# Loggers that write a line per request or per connection: quiet unless request logs are asked for.
REQUEST_LOGGERS = ("httpx", "httpcore", "uvicorn.access")


def configure(level: int = logging.INFO, log_requests: bool = False) -> None:
    """Send every logger's records (uvicorn's too, when it is run without its own log config) to stderr.

    Per-request lines are left out unless `log_requests` (E2B_LOCAL_LOG_REQUESTS=1).
    """
    handler = ReservedLogHandler(2)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if log_requests else logging.WARNING)
    logging.captureWarnings(True)
