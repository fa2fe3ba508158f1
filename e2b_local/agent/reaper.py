"""Reaping: the agent is pid 1 of its sandbox, so every orphan in the sandbox becomes its child too.

One owner waits for every child, so that no exit status is ever taken by the wrong waiter:
`ChildReaper`, installed as asyncio's child watcher. A child asyncio starts is registered in the same
step as its fork and watched through a pidfd (readable when it exits); a sweep with waitpid(-1)
collects orphans (daemons, double-forked jobs). Both run on the event loop's thread. A status the
sweep takes for a pid nobody registered yet is kept until that pid is registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from collections.abc import Callable
from typing import Any

# How often exited orphans are collected.
SWEEP_SECONDS = 1.0
# Statuses of pids nobody registered (mostly orphans) kept at most; the oldest go first.
UNCLAIMED_MAX = 4096


class ChildReaper(asyncio.AbstractChildWatcher):
    """asyncio's child watcher for pid 1: waits for its own children and every orphan."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callbacks: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._pidfds: dict[int, int] = {}
        self._unclaimed: dict[int, int] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    # -- AbstractChildWatcher --------------------------------------------------------------------
    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Run on `loop` (its thread is the only one that ever waits for children)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._loop = loop
        if loop is not None:
            self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep_and_reschedule)

    def is_active(self) -> bool:
        return self._loop is not None and not self._loop.is_closed()

    def close(self) -> None:
        """Stop watching (pending children are no longer reported)."""
        for pid in list(self._pidfds):
            self._forget(pid)
        self._callbacks.clear()
        self.attach_loop(None)

    def __enter__(self) -> ChildReaper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def add_child_handler(self, pid: int, callback: Callable[..., Any], *args: Any) -> None:
        """Call `callback(pid, returncode, *args)` once child `pid` has exited."""
        assert self._loop is not None, "the reaper is not attached to a loop"
        returncode = self._unclaimed.pop(pid, None)
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = None
        if pidfd is None:
            # Already collected by the sweep, before anyone claimed it.
            self._loop.call_soon(callback, pid, 255 if returncode is None else returncode, *args)
            return
        # The process exists, so any status kept for this pid was an earlier process's.
        self._callbacks[pid] = (callback, args)
        self._pidfds[pid] = pidfd
        self._loop.add_reader(pidfd, self._collect, pid)

    def remove_child_handler(self, pid: int) -> bool:
        found = pid in self._callbacks
        self._forget(pid)
        return found

    # -- reaping ---------------------------------------------------------------------------------
    def _forget(self, pid: int) -> None:
        self._callbacks.pop(pid, None)
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(pidfd)
            os.close(pidfd)

    def _collect(self, pid: int) -> None:
        try:
            waited, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            self._forget(pid)  # the sweep took it and has reported it
            return
        if waited == pid:
            self._deliver(pid, os.waitstatus_to_exitcode(status))

    def _deliver(self, pid: int, returncode: int) -> None:
        entry = self._callbacks.get(pid)
        self._forget(pid)
        if entry is not None:
            callback, args = entry
            callback(pid, returncode, *args)
            return
        self._unclaimed[pid] = returncode
        while len(self._unclaimed) > UNCLAIMED_MAX:
            del self._unclaimed[next(iter(self._unclaimed))]

    def sweep(self) -> None:
        """Collect every child that has exited, registered or not."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            # Kept when unregistered: an orphan most likely, whose status nobody will ask for.
            self._deliver(pid, os.waitstatus_to_exitcode(status))

    def _sweep_and_reschedule(self) -> None:
        try:
            self.sweep()
        finally:
            if self._loop is not None and not self._loop.is_closed():
                self._sweeper = self._loop.call_later(SWEEP_SECONDS, self._sweep_and_reschedule)


def install_reaper(loop: asyncio.AbstractEventLoop) -> ChildReaper:
    """Make a `ChildReaper` on `loop` the only waiter for children of this process."""
    reaper = ChildReaper()
    reaper.attach_loop(loop)
    with warnings.catch_warnings():
        # Child watchers are deprecated from Python 3.12 on, but still the way to choose the waiter.
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(reaper)
    return reaper


def release_reaper(reaper: ChildReaper) -> None:
    """Stop `reaper` (at shutdown)."""
    with contextlib.suppress(Exception):
        reaper.close()
