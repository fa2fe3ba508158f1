"""What a sandbox is charged does not depend on how many sandboxes run beside it."""

from __future__ import annotations

from pathlib import Path

from e2b_code_interpreter import Sandbox as CodeSandbox

from e2b_local.isolation.cgroups import SandboxCgroup
from local.sandbox_helpers import registry_key

# Sandboxes created between the two that are compared.
BETWEEN = 18
# The kernel zygote holds descriptors for every sandbox (about 14 each), which each kernel inherits
# and closes. Closing them by listing /proc/self/fd charges the kernel a dentry and an inode for each:
# 12.6 KB more per sandbox before it, 227 KB over BETWEEN. Two sandboxes made alike differ by a few
# tens of KB.
MOST_GROWTH_KB = 96


def _started(home: Path) -> tuple[CodeSandbox, SandboxCgroup]:
    sandbox = CodeSandbox.create()
    assert sandbox.run_code("x = 1").error is None
    return sandbox, SandboxCgroup(registry_key(home, sandbox.sandbox_id))


def test_a_sandboxs_kernel_memory_does_not_grow_with_the_sandboxes_before_it(e2b_server) -> None:
    sandboxes: list[CodeSandbox] = []
    try:
        first, first_cgroup = _started(e2b_server.home)
        sandboxes.append(first)
        for _ in range(BETWEEN):
            sandboxes.append(_started(e2b_server.home)[0])
        last, last_cgroup = _started(e2b_server.home)
        sandboxes.append(last)
        first_kb, last_kb = first_cgroup.kernel_memory() // 1024, last_cgroup.kernel_memory() // 1024
        assert last_kb - first_kb <= MOST_GROWTH_KB, (
            f"the sandbox created after {BETWEEN + 1} others is charged {last_kb} KB of kernel memory, "
            f"the first {first_kb} KB")
    finally:
        for sandbox in sandboxes:
            sandbox.kill()
