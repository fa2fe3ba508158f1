"""What the code interpreter needs to know of its sandbox, provided by the agent that builds it.

The interpreter imports nothing of the agent: the agent hands it an object of this shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from e2b_local.interpreter.forking import KernelForker


class Account(Protocol):
    """The Unix account kernels run as."""

    @property
    def uid(self) -> int: ...

    @property
    def gid(self) -> int: ...

    @property
    def home(self) -> str: ...

    @property
    def groups(self) -> tuple[int, ...]: ...

    def resolve(self, path: str | None) -> str:
        """An absolute path for `path` by envd's rules (`~`, relative to home)."""
        ...

    def base_env(self) -> dict[str, str]:
        """PATH, HOME, USER and LOGNAME of this account."""
        ...


class Sandbox(Protocol):
    """The sandbox's current settings and the workload cgroup kernels join."""

    def default_account(self) -> Account:
        """The sandbox's default user (raises LookupError when it does not exist)."""
        ...

    def default_workdir(self) -> str | None:
        """The sandbox's default working directory, if one was set."""
        ...

    def sandbox_env(self) -> dict[str, str]:
        """The environment variables every process of the sandbox gets."""
        ...

    def become_workload(self) -> None:
        """Make the calling process one of the sandbox's programs (in a child, before exec): in the
        workload cgroup, and as liable to out-of-memory kills as any other."""
        ...

    def kernel_forker(self) -> KernelForker:
        """The channel to the template's kernel zygote (which may have none)."""
        ...
