"""New code contexts on a spare kernel: started before the create, yet as fresh as any other."""

from __future__ import annotations

import time

from conftest import LocalServer
from e2b_code_interpreter import Sandbox

KERNEL_AGE = ("import os\n"
              "uptime = float(open('/proc/uptime').read().split()[0])\n"
              "start = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])\n"
              "print(uptime - start / os.sysconf('SC_CLK_TCK'))")


def test_second_context_gets_a_spare_kernel_that_is_fresh(e2b_server: LocalServer) -> None:
    sandbox = Sandbox.create(timeout=120, envs={"BURST_ENV": "from-create"})
    try:
        first = sandbox.create_code_context()
        assert sandbox.run_code("shared = 'first'; import secrets; print(secrets.token_hex(16))",
                                context=first).logs.stdout
        # The first create started a spare; the next one is handed it.
        started = time.monotonic()
        second = sandbox.create_code_context()
        took = time.monotonic() - started
        age = float(sandbox.run_code(KERNEL_AGE, context=second).logs.stdout[0])
        assert age > took, "the new context's kernel started during its create, not before"
        assert second.id != first.id and second.cwd == first.cwd == "/home/user"
        probe = ("import os, secrets; print('shared' in globals(), os.getcwd(), os.environ.get('BURST_ENV'),"
                 " secrets.token_hex(16))")
        one = sandbox.run_code(probe, context=first).logs.stdout[0].split()
        two = sandbox.run_code(probe, context=second).logs.stdout[0].split()
        assert one[:3] == ["True", "/home/user", "from-create"]
        assert two[:3] == ["False", "/home/user", "from-create"]
        assert one[3] != two[3]
        # A context elsewhere still starts in its own directory.
        other = sandbox.create_code_context(cwd="/tmp")
        assert sandbox.run_code("import os; print(os.getcwd())", context=other).logs.stdout == ["/tmp\n"]
        ids = [c.id for c in sandbox.list_code_contexts()]
        assert len(ids) == len(set(ids)) and {first.id, second.id, other.id} <= set(ids)
    finally:
        sandbox.kill()
