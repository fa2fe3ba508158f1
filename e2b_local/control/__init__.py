"""The control plane, in layers whose imports run one way (each imports only those below it).

1. `server.py` assembles the layers; `api/` (E2B's REST API) and `router.py` (the proxy to sandbox agents)
2. `lifecycle.py` (pause, resume, timeouts, auto-resume) and `snapshots.py` (snapshots, forks)
3. `fleet/` (the running sandboxes: boot, warm pool, kill, network, metrics)
4. `registry.py`, `errors.py`, `auth.py`, shared by the layers above; `e2b_local/isolation/` below them all
"""
