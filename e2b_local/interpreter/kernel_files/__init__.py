"""Files that run inside code-interpreter sandboxes, with the template's own Python, not in the agent.

`e2b_local.isolation.rootfs` copies them into the code-interpreter root filesystem (their contents
are part of that layer's name, so editing one rebuilds the layer). They are a package only so that
they ship with e2b-local; nothing imports them outside a sandbox.
"""
