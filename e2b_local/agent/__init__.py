"""The in-sandbox agent: E2B's envd services (process, filesystem, files) and the code interpreter.

It runs inside the sandbox's namespaces as the sandbox's root, so every file and process operation
sees exactly what the sandbox's own programs see, and listens on a Unix socket that the host's
server forwards requests to.
"""
