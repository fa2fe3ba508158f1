"""The code interpreter of e2b-local: E2B's port-49999 server (`/execute`, `/contexts`) inside the agent.

It runs in the sandbox, in the agent's process, and drives real Jupyter kernels that run as the
sandbox's default user with the sandbox's own interpreters:

- `languages`: which languages exist, their kernels, and the snippets that set env vars in each;
- `connection`: kernels' connection files (Unix socket files, or loopback TCP for Deno);
- `client`: a lean Jupyter client (ZeroMQ, and Jupyter's message framing and signing) for one kernel;
- `kernels`: starting, watching, interrupting and killing one kernel process;
- `contexts`: E2B's contexts (one kernel each), the default context per language;
- `outputs`: Jupyter messages translated into E2B's NDJSON lines;
- `execution`: one `/execute` request, streamed;
- `sandbox`: what the interpreter needs of its sandbox, which the agent provides when it builds the app;
- `app`: the ASGI application the agent hands port-49999 requests to.

The kernel-side files (IPython start-up, the Bash kernel) live in `kernel_files/` and are copied into
the code-interpreter root filesystem by `e2b_local.isolation.rootfs`, which also writes the kernel
specs and the marker file (/etc/e2b/template) that makes the agent start the Python kernel at boot.
"""
