"""What the host and the sandbox must agree on: ports, paths inside the sandbox, variable names.

Both sides import this module and nothing else of each other, so it imports nothing of e2b_local.
"""

from __future__ import annotations

# The ports the SDK addresses inside a sandbox (E2B-Sandbox-Port): envd and the code interpreter.
ENVD_PORT = 49983
CODE_INTERPRETER_PORT = 49999
AGENT_PORTS = (ENVD_PORT, CODE_INTERPRETER_PORT)

# The envd version we report: new enough that the SDK enables every feature (see the protocol notes).
ENVD_VERSION = "0.6.7"

# The built-in templates, in the order their layers stack.
BASE_TEMPLATE = "base"
CODE_INTERPRETER_TEMPLATE = "code-interpreter-v1"
# What the SDK creates a sandbox from when given `mcp=` and no template.
MCP_GATEWAY_TEMPLATE = "mcp-gateway"
TEMPLATES = (BASE_TEMPLATE, CODE_INTERPRETER_TEMPLATE, MCP_GATEWAY_TEMPLATE)

# The port of the MCP gateway inside a sandbox (the SDK's Sandbox.mcp_port).
MCP_GATEWAY_PORT = 50005

# Where the launcher mounts e2b-local's own files inside a sandbox.
BASE_MOUNT = "/.e2b/base"
AGENT_MOUNT = "/.e2b/agent"
RUN_MOUNT = "/.e2b/run"
KERNELS_ROOT = "/.e2b/kernels"

# The descriptors the launcher hands the agent, by environment variable (taken once, at its start).
AGENT_FD_VARIABLE = "E2B_LOCAL_AGENT_FD"
WORKLOAD_FD_VARIABLE = "E2B_LOCAL_WORKLOAD_FD"
# The certificate (PEM) of the server's egress authority, which the agent adds to the sandbox's trust
# store at its start (taken once, like the descriptors).
EGRESS_CA_VARIABLE = "E2B_LOCAL_EGRESS_CA"

# The name of the agent's socket in the host-only sandbox directory.
AGENT_SOCKET_NAME = "agent.sock"

# The agent's record of what happened in its sandbox (processes started and ended), which only the
# control plane reads: the router never forwards it.
JOURNAL_PATH = "/journal"

# A zygote (a pre-imported agent that is forked for each sandbox) gets its request socket by this
# variable; each request carries these descriptors, in this order, then the sandbox's cgroup.procs
# files and, when there is one, the workload's (see e2b_local/zygote).
ZYGOTE_FD_VARIABLE = "E2B_LOCAL_ZYGOTE_FD"
ZYGOTE_REQUEST_FDS = ("answer", "spec", "mnt", "net", "user", "listener", "log", "seccomp")
# Set to 1 when the server merges sandboxes' identical pages (E2B_LOCAL_MERGE_PAGES): each agent and
# kernel forked from the zygote marks the memory it inherited mergeable, once it is in its sandbox.
ZYGOTE_MERGE_VARIABLE = "E2B_LOCAL_ZYGOTE_MERGE"
# The Python kernel's spec in templates that have one (the code interpreter's); kernel zygotes are
# started for those (see e2b_local/zygote/kernels.py), and the agent hands their channel on by this.
KERNELSPECS_DIR = "/usr/local/share/jupyter/kernels"
PYTHON_KERNELSPEC = KERNELSPECS_DIR + "/python3/kernel.json"
KERNELS_FD_VARIABLE = "E2B_LOCAL_KERNELS_FD"
