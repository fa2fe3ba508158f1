"""The zygote: a pre-imported agent that is forked into each new sandbox instead of started afresh.

Started by the fork server, one per base layer and agent bundle, as host root in a mount namespace
where the base layer and the bundle are at the paths sandboxes see them at. Each fork joins the
namespaces the launcher made for a sandbox and becomes its agent (`spawn`), sharing the interpreter
and every imported module with the zygote until it writes to them.
"""
