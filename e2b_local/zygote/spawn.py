"""A zygote's fork: join a sandbox's namespaces and become its agent, pid 1 of the sandbox.

The launcher has made the sandbox's user and network namespaces and a mount namespace holding its
staged root, as for bubblewrap, and sends descriptors of them with the request (in the order of
`protocol.ZYGOTE_REQUEST_FDS`). The fork (still host root, in the zygote's namespaces):

1. reads the request's spec, joins the sandbox's cgroups, the launcher's mount namespace and the
   sandbox's network and user namespaces, and becomes root of the user namespace, as the launcher's child is;
2. unshares a pid namespace and forks the agent, whose host pid it answers, then exits;
3. the agent, pid 1 of that namespace, unshares mount, ipc and uts namespaces and carries out the
   sandbox's `Assembly` as bubblewrap would (mounts, pivot into the root, hostname, capabilities,
   session, limits, environment, descriptors, seccomp filter last), registers the sandbox with the
   template's kernel zygote when it has one (`Kernels`), closes the answer (end of file there means
   the sandbox is assembled) and runs the agent's own main.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import NoReturn

from e2b_local import linux
from e2b_local.protocol import AGENT_FD_VARIABLE, KERNELS_FD_VARIABLE, WORKLOAD_FD_VARIABLE, ZYGOTE_REQUEST_FDS
from e2b_local.zygote.assembly import Assembly, finish, mount_all
from e2b_local.zygote.forks import fail, let_merge, read_all
from e2b_local.zygote.kernels import REGISTRATION_FDS


def spawn(fds: list[int], merge: bool) -> NoReturn:
    """In a fork of the zygote: steps 1 and 2 above; never returns (`merge`: see `forks.let_merge`)."""
    named = dict(zip(ZYGOTE_REQUEST_FDS, fds, strict=False))
    answer = named.get("answer", -1)
    try:
        if len(fds) < len(ZYGOTE_REQUEST_FDS):
            raise ValueError(f"a request needs {len(ZYGOTE_REQUEST_FDS)} descriptors, got {len(fds)}")
        spec = json.loads(read_all(named["spec"]))
        extra = fds[len(ZYGOTE_REQUEST_FDS):]
        cgroups, rest = extra[:spec["cgroups"]], extra[spec["cgroups"]:]
        workload = rest.pop(0) if spec["workload"] else None
        kernels = rest.pop(0) if spec.get("kernels") else None
        # As soon as this fork knows them: every page it copies from the zygote from here on is the
        # agent's, and is charged to the sandbox.
        for fd in cgroups:
            os.write(fd, b"0")
            if kernels is None:
                os.close(fd)
        assembly = Assembly.from_dict(spec["assembly"])
        linux.setns(named["mnt"], linux.CLONE_NEWNS)
        # As for a freshly launched agent: out-of-memory kills go to the sandbox's programs (needs
        # CAP_SYS_RESOURCE, which some hosts withhold even from root).
        with contextlib.suppress(PermissionError), open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
        last_cap = linux.last_capability()
        seccomp = read_all(named["seccomp"])
        linux.setns(named["net"], linux.CLONE_NEWNET)
        linux.setns(named["user"], linux.CLONE_NEWUSER)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        os.setgroups([])
        for name in ("spec", "mnt", "net", "user"):
            os.close(named[name])
        linux.unshare(linux.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            _become_agent(assembly, spec["scratch"], seccomp, last_cap, answer, named["listener"],
                          named["log"], workload,
                          Kernels(kernels, named["seccomp"], cgroups) if kernels is not None else None, merge)
        os.write(answer, f"pid {pid}\n".encode())
    except BaseException as exc:  # the fork must never return into the zygote's loop
        fail(answer, exc)
    os._exit(0)


@dataclass
class Kernels:
    """The template's kernel zygote (its request socket), and the seccomp filter and cgroups its kernels get."""

    zygote: int
    seccomp: int
    cgroups: list[int]

    def register(self, assembly: Assembly, workload: int | None) -> int | None:
        """Register this process's namespaces (the sandbox's, once assembled) with the kernel zygote.

        Returns the agent's end of the sandbox's channel, through which it asks for kernels, or None
        when the zygote is gone (the agent then executes its kernels). The zygote's request socket is
        closed: the agent can only ever ask for kernels in its own sandbox.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        namespaces = [os.open(f"/proc/self/ns/{kind}", os.O_RDONLY) for kind in REGISTRATION_FDS[1:-1]]
        details = json.dumps({"open_files": assembly.open_files, "dropped_caps": assembly.dropped_caps})
        try:
            with socket.socket(fileno=self.zygote) as zygote:
                socket.send_fds(zygote, [details.encode()], [theirs.fileno(), *namespaces, self.seccomp, *self.cgroups,
                                                             *([workload] if workload is not None else [])])
        except OSError as exc:
            print(f"e2b-local agent: no kernel zygote, kernels start afresh: {exc}", file=sys.stderr, flush=True)
            ours.close()
            return None
        finally:
            for fd in (*namespaces, self.seccomp, *self.cgroups):
                os.close(fd)
            theirs.close()
        return ours.detach()


def _become_agent(assembly: Assembly, scratch: str, seccomp: bytes, last_cap: int, answer: int,
                  listener: int, log: int, workload: int | None, kernels: Kernels | None, merge: bool) -> NoReturn:
    """Step 3 above, as pid 1 of the sandbox's pid namespace; never returns."""
    try:
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS)
        mount_all(assembly, scratch)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        channel = kernels.register(assembly, workload) if kernels is not None else None
        keep = {listener, answer} | {fd for fd in (workload, channel) if fd is not None}
        finish(assembly, seccomp, last_cap, keep)
        os.environ[AGENT_FD_VARIABLE] = str(listener)
        if workload is not None:
            os.environ[WORKLOAD_FD_VARIABLE] = str(workload)
        if channel is not None:
            os.environ[KERNELS_FD_VARIABLE] = str(channel)
        if merge:
            let_merge()
        os.close(answer)
    except BaseException as exc:
        fail(answer, exc)
    code = 0
    try:
        from e2b_local.agent.__main__ import main

        main()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
    os._exit(code)
