"""Collecting exited children: the server adopts orphaned sandbox processes and reaps them.

Sandbox processes outlive the launcher that started them; as a subreaper, the server becomes their
parent and must wait for them, or they stay zombies. The fork server reaps its launcher forks the
same way.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("e2b_local")


def reap_children() -> None:
    """Collect every child that has exited, without waiting for the others."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        log.debug("reaped process %d (%s)", pid, _describe(status))


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def become_subreaper() -> None:
    """Adopt orphaned sandbox processes, so that they are reaped rather than left as zombies."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
