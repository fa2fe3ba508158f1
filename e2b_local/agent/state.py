"""What the host tells the agent about its sandbox (E2B's `/init`): env vars and defaults.

No token is kept here: the host authenticates every request before it reaches the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SandboxState:
    """Per-sandbox settings applied to every process the agent starts; one instance per agent."""

    sandbox_id: str = ""
    template_id: str = ""
    env_vars: dict[str, str] = field(default_factory=dict)
    default_user: str = "user"
    default_workdir: str | None = None
    # What points programs at the trust store that holds the egress authority (see trust.py).
    trust_env: dict[str, str] = field(default_factory=dict)

    def sandbox_env(self) -> dict[str, str]:
        """E2B's default variables and the trust store's, followed by the create-time `envs`."""
        env = {"E2B_SANDBOX": "true"}
        if self.sandbox_id:
            env["E2B_SANDBOX_ID"] = self.sandbox_id
        if self.template_id:
            env["E2B_TEMPLATE_ID"] = self.template_id
        env.update(self.trust_env)
        env.update(self.env_vars)
        return env

