"""Signed `/files` links without a sandbox address: how `download_url()` / `upload_url()` look in URL mode.

With `E2B_SANDBOX_URL` set the SDK builds `<sandbox url>/files?path=...&signature=...`, a link that
names no sandbox; the signature does, being made with one sandbox's access token. The sandbox is the
one whose token yields that signature; the router then checks the link (its expiry included) as it
checks any other.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from starlette.datastructures import QueryParams

from e2b_local.control.auth import sign
from e2b_local.control.registry import SandboxRecord

OPERATIONS = {"GET": "read", "POST": "write"}


def signed_by(records: Iterable[SandboxRecord], method: str, query_string: bytes) -> str | None:
    """The id of the sandbox whose access token signed this `/files` link, if one did."""
    operation = OPERATIONS.get(method)
    query = QueryParams(query_string)
    signature = query.get("signature")
    if operation is None or signature is None:
        return None
    raw = query.get("signature_expiration")
    try:
        expiration = int(raw) if raw is not None else None
    except ValueError:
        return None
    path, username = query.get("path", ""), query.get("username", "")
    for record in records:
        if record.access_token and secrets.compare_digest(
                signature.encode(), sign(path, operation, username, record.access_token, expiration).encode()):
            return record.sandbox_id
    return None
