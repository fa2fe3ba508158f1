"""E2B's control-plane REST API (`/v2/sandboxes`, `/sandboxes/{id}/...`), v2 and the older v1 routes.

- `app.py`: the Starlette application, its error handlers and every route
- `sandboxes.py`: create, list, get, kill, timeouts; `persistence.py`: pause, connect, snapshots,
  forks, network; `metrics.py`: resource samples and the health probe
- `params.py`: parsing and validating request bodies and query parameters; `wire.py`: the JSON shapes
"""
