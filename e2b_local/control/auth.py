"""Who may reach a sandbox through the router.

Every request routed to a sandbox is checked here, on the host, before anything reaches the agent:
the agent holds no token, so nothing a sandbox can read from its own memory opens it or another
sandbox. Accepted: the server's API key, the sandbox's envd access token, on the code-interpreter
port its traffic token, and on `/files` a URL signed with the access token (envd's v1 signature).
`GET /health` is open, as envd's is; `/init` is the control plane's alone and never routed.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import secrets
import time
from dataclasses import dataclass

from starlette.datastructures import QueryParams

from e2b_local.control.registry import SandboxRecord
from e2b_local.protocol import CODE_INTERPRETER_PORT, JOURNAL_PATH

# Credentials the router consumes: they are never passed on to the agent.
CREDENTIAL_HEADERS = frozenset({b"x-api-key", b"x-access-token", b"e2b-traffic-access-token"})
# The Connect services, whose clients expect a Connect error body (a string code).
RPC_PREFIXES = ("/process.Process/", "/filesystem.Filesystem/")
# The agent routes only the control plane may call.
PRIVATE_PATHS = ("/init", JOURNAL_PATH)
# Query parameters a signature covers or the agent acts on: each may appear once, so that the value
# checked here is the value the agent uses.
SIGNED_PARAMS = ("path", "username", "signature", "signature_expiration")


@dataclass(frozen=True)
class Refusal:
    """Why a request is not let through, answered as `status` with `message`."""

    status: int
    message: str


def sign(path: str, operation: str, username: str, token: str, expiration: int | None) -> str:
    """envd's v1 URL signature: base64 of SHA-256 over `path:operation:username:token[:expiration]`."""
    raw = f"{path}:{operation}:{username}:{token}" + (f":{expiration}" if expiration is not None else "")
    return "v1_" + base64.b64encode(hashlib.sha256(raw.encode()).digest()).decode().rstrip("=")


def _equal(presented: bytes | None, expected: str) -> bool:
    return presented is not None and bool(expected) and secrets.compare_digest(presented, expected.encode())


def is_private(path: str) -> bool:
    """True for agent routes the router never forwards, however the path is spelled."""
    return posixpath.normpath("/" + path.lstrip("/")) in PRIVATE_PATHS


def _signature(record: SandboxRecord, method: str, query_string: bytes) -> Refusal | None:
    operation = {"GET": "read", "POST": "write"}.get(method)
    query = QueryParams(query_string)
    signature = query.get("signature")
    if operation is None or signature is None:
        return Refusal(401, "missing access token or signature")
    for name in SIGNED_PARAMS:
        if len(query.getlist(name)) > 1:
            return Refusal(400, f"the query parameter '{name}' may appear only once")
    expiration: int | None = None
    if (raw := query.get("signature_expiration")) is not None:
        try:
            expiration = int(raw)
        except ValueError:
            return Refusal(400, "signature_expiration must be an integer")
    expected = sign(query.get("path", ""), operation, query.get("username", ""), record.access_token, expiration)
    if not secrets.compare_digest(signature.encode(), expected.encode()):
        return Refusal(401, "invalid signature")
    if expiration is not None and expiration < time.time():
        return Refusal(401, "signature is already expired")
    return None


def check(record: SandboxRecord, api_key: str, method: str, path: str, query_string: bytes,
          headers: dict[bytes, bytes]) -> Refusal | None:
    """None when the request may reach the sandbox of `record`, else why not."""
    if is_private(path):
        return Refusal(403, f"{path} is not reachable through the sandbox proxy")
    if method == "GET" and path == "/health":
        return None
    if _equal(headers.get(b"x-api-key"), api_key) or _equal(headers.get(b"x-access-token"), record.access_token):
        return None
    port = headers.get(b"e2b-sandbox-port")
    if port == str(CODE_INTERPRETER_PORT).encode():
        if _equal(headers.get(b"e2b-traffic-access-token"), record.traffic_access_token):
            return None
    elif path == "/files" and b"x-access-token" not in headers:
        return _signature(record, method, query_string)
    if b"x-access-token" in headers:
        return Refusal(401, "access token present in header but does not match")
    return Refusal(401, "missing or invalid access token")


def refusal_body(refusal: Refusal, path: str) -> dict[str, object]:
    """The error body the SDK maps to its exception: Connect's string code on RPC paths, else envd's JSON."""
    if path.startswith(RPC_PREFIXES):
        code = {401: "unauthenticated", 403: "permission_denied"}.get(refusal.status, "invalid_argument")
        return {"code": code, "message": refusal.message}
    return {"code": refusal.status, "message": refusal.message}
