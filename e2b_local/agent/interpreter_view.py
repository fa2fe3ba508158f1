"""The sandbox as the agent shows it to the code interpreter (see `interpreter.sandbox.Sandbox`).

Apart from `app`, so that the agent can build the interpreter and start its kernel before importing
the rest of itself (see `__main__.start`).
"""

from __future__ import annotations

from e2b_local.agent.state import SandboxState
from e2b_local.agent.users import Accounts, User
from e2b_local.agent.workload import Workload
from e2b_local.interpreter.forking import KernelForker


class InterpreterSandbox:
    """The sandbox as the code interpreter sees it (see `interpreter.sandbox.Sandbox`)."""

    def __init__(self, state: SandboxState, accounts: Accounts, workload: Workload,
                 forker: KernelForker | None = None) -> None:
        self.state = state
        self.accounts = accounts
        self.workload = workload
        self.forker = forker or KernelForker(None)

    def default_account(self) -> User:
        """The sandbox's default user."""
        return self.accounts.default()

    def default_workdir(self) -> str | None:
        """The sandbox's default working directory, if set."""
        return self.state.default_workdir

    def sandbox_env(self) -> dict[str, str]:
        """The environment every process of the sandbox gets."""
        return self.state.sandbox_env()

    def become_workload(self) -> None:
        """Make the calling child one of the sandbox's programs (see `Workload.enter`)."""
        self.workload.enter()

    def kernel_forker(self) -> KernelForker:
        """The channel to the template's kernel zygote (none for an agent executed afresh)."""
        return self.forker
