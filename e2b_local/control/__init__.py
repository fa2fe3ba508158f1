"""The control plane: E2B's REST API, the router to sandbox agents, and sandbox lifecycles."""
