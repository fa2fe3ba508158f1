"""The workload memory cgroup: where every process the agent starts runs, apart from the agent.

The launcher hands the agent a descriptor of that cgroup's `cgroup.procs`, opened by host root;
a child writes "0" to it between fork and exec to move itself there. Out-of-memory kills caused
by the sandbox's programs then stay among them (see isolation/cgroups.py). Without the descriptor
(cgroup v2 hosts), children stay where the agent is.
"""

from __future__ import annotations

import os

from e2b_local import linux
from e2b_local.protocol import WORKLOAD_FD_VARIABLE


class Workload:
    """The workload cgroup's `cgroup.procs` descriptor, if the launcher handed one over."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = fd

    @classmethod
    def take(cls) -> Workload:
        """Take the descriptor from the environment, once, at the agent's start (no child inherits it)."""
        value = os.environ.pop(WORKLOAD_FD_VARIABLE, None)
        if value is None:
            return cls()
        fd = int(value)
        os.set_inheritable(fd, False)
        return cls(fd)

    def enter(self) -> None:
        """Make the calling process one of the sandbox's programs (call in a child, before exec): in
        the workload cgroup, and without the agent's protection from out-of-memory kills."""
        if self.fd is not None:
            os.write(self.fd, b"0")
        reset_oom_score()


def reset_oom_score() -> None:
    """Undo the agent's protection from out-of-memory kills for a process it starts (in the child)."""
    # The agent's filesystem identity switches leave it undumpable; an agent forked from a zygote
    # (whose memory dates from outside the sandbox) then has its /proc files owned by host root, and
    # so would this child until its exec. Dumpable again, they are its own (the exec decides anew).
    linux.prctl(linux.PR_SET_DUMPABLE, 1, what="setting dumpable")
    with open("/proc/self/oom_score_adj", "r+") as f:
        if f.read().strip() != "0":
            f.seek(0)
            f.write("0")
