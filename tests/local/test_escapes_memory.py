"""Out of memory inside a sandbox: its programs are killed, never its agent."""

from __future__ import annotations

from e2b import CommandExitException, Sandbox

from e2b_local.isolation.cgroups import WORKLOAD, SandboxCgroup
from local.sandbox_helpers import registry_key


def _agent_rss_kb(sandbox: Sandbox) -> int:
    status = sandbox.commands.run("cat /proc/1/status", user="root").stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_one_process_past_the_limit_is_killed_and_the_agent_lives(e2b_server) -> None:
    with Sandbox.create() as sandbox:
        try:
            sandbox.commands.run("python3 -c 'b = bytearray(4 << 30)'", timeout=120)
        except CommandExitException as exc:
            assert exc.exit_code != 0
        else:
            raise AssertionError("allocating 4 GiB in a 1 GiB sandbox succeeded")
        assert sandbox.commands.run("echo alive").stdout == "alive\n"


def test_many_processes_smaller_than_the_agent_never_get_it_killed(e2b_server) -> None:
    with Sandbox.create() as sandbox:
        cgroup = SandboxCgroup(registry_key(e2b_server.home, sandbox.sandbox_id))
        workload = cgroup.workload_procs()
        if workload is not None:
            # Everything the agent starts runs in the workload cgroup; the agent stays outside it.
            assert str(sandbox.commands.run("cat /proc/self/cgroup").stdout).count(f"/{WORKLOAD}") == 1
        agent_kb = _agent_rss_kb(sandbox)
        # Each hog stays smaller than the agent, so a kernel choosing the largest process of the whole
        # sandbox would pick the agent; together they ask for twice the sandbox's memory.
        hog_mb = max(agent_kb // 1024 - 12, 4)
        count = 2 * 1024 // hog_mb + 1
        hog = (f"import time; b = bytearray({hog_mb - 8} << 20); b[::4096] = b'x' * len(b[::4096]);"
               "time.sleep(20)")
        sandbox.files.write("/tmp/hog.py", hog)
        sandbox.commands.run(f"for i in $(seq {count}); do python3 /tmp/hog.py & done; sleep 15; echo done",
                             timeout=120)
        assert sandbox.commands.run("echo alive").stdout == "alive\n"
        assert cgroup.oom_kills() > 0, "the hogs never reached the memory limit"
