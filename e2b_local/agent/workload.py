"""The workload memory cgroup: where every process the agent starts runs, apart from the agent.

The launcher hands the agent a descriptor of that cgroup's `cgroup.procs`, opened by host root;
a child writes "0" to it between fork and exec to move itself there. Out-of-memory kills caused
by the sandbox's programs then stay among them (see isolation/cgroups.py). Without the descriptor
(cgroup v2 hosts), children stay where the agent is.
"""

from __future__ import annotations

import os

WORKLOAD_FD_VARIABLE = "E2B_LOCAL_WORKLOAD_FD"

_fd: int | None = None


def take_descriptor() -> None:
    """Take the descriptor from the environment, once, at the agent's start (no child inherits it)."""
    global _fd
    value = os.environ.pop(WORKLOAD_FD_VARIABLE, None)
    if value is not None:
        _fd = int(value)
        os.set_inheritable(_fd, False)


def join() -> None:
    """Move the calling process into the workload cgroup (call in a child, before exec)."""
    if _fd is not None:
        os.write(_fd, b"0")
