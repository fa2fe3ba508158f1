"""e2b-local's MCP gateway: runs inside a sandbox of the `mcp-gateway` template.

`mcp-gateway --config '<json>'` (what the SDK runs for `Sandbox.create(mcp=...)`) starts each configured
MCP server over stdio, aggregates their tools and serves them on one Streamable HTTP endpoint
(port 50005, path /mcp) that requires `Authorization: Bearer <token>`. Sandbox side: it imports nothing
of the host side.
"""
