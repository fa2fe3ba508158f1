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

    def sandbox_env(self) -> dict[str, str]:
        """E2B's default variables followed by the create-time `envs`."""
        env = {"E2B_SANDBOX": "true"}
        if self.sandbox_id:
            env["E2B_SANDBOX_ID"] = self.sandbox_id
        if self.template_id:
            env["E2B_TEMPLATE_ID"] = self.template_id
        env.update(self.env_vars)
        return env

