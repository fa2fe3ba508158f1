"""Zygotes: a pre-imported agent forked into each new sandbox, and a pre-imported Python kernel forked
for each of its kernels, instead of either being started afresh.

Started by the fork server as host root, in mount namespaces where their files are at the paths
sandboxes see them at: the agent's zygote one per base layer and agent bundle, the kernels' one per
template with an ipykernel (`kernels`). An agent zygote's fork joins the namespaces the launcher
made for a sandbox and becomes its agent (`spawn`, `assembly`); a kernel zygote's fork joins those
its sandbox registered and becomes a kernel. Each shares the interpreter and every imported module
with its zygote until it writes to them.
"""
