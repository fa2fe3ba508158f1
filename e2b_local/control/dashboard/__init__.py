"""The web dashboard: server-rendered pages over the control-plane API, behind the API key."""

from e2b_local.control.dashboard.app import PREFIX, build, is_dashboard_path

__all__ = ["PREFIX", "build", "is_dashboard_path"]
