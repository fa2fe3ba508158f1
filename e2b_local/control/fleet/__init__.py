"""The fleet: the sandboxes this server runs and what each needs, above the isolation layer.

- `sandboxes.py`: the `Fleet`, which registers, adopts, watches and kills sandboxes
- `boot.py`: starting a sandbox's namespaces and agent; `pool.py`: the warm pool of pre-started ones
- `records.py`: the fleet's runtime values (what a sandbox starts from, its live connections)
- `network.py` and `egress.py`: a sandbox's outbound rules; `metrics.py`: its resource samples
- `scheduling.py`: the worker threads boots, teardowns and samples run in; `upstream.py`: the agent's socket
"""
