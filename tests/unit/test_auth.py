"""Who the router lets through to a sandbox: API key, access tokens, traffic token, signed URLs."""

from __future__ import annotations

import time

import pytest
from e2b.sandbox.signature import get_signature
from starlette.datastructures import QueryParams

from e2b_local.control.auth import Refusal, check, is_private, refusal_body, sign
from e2b_local.control.registry import SandboxRecord

API_KEY = "e2b_" + "a" * 40
RECORD = SandboxRecord(sandbox_id="s1", template_id="base", key="k", access_token="access", started_at=0, end_at=0,
                       traffic_access_token="traffic")


def _check(method: str = "GET", path: str = "/files", query: dict[str, str] | str = "",
           **headers: str) -> Refusal | None:
    raw = {name.replace("_", "-").lower().encode(): value.encode() for name, value in headers.items()}
    query_string = (query if isinstance(query, str) else str(QueryParams(query))).encode()
    return check(RECORD, API_KEY, method, path, query_string, raw)


def test_credentials_that_open_the_sandbox() -> None:
    assert _check(path="/process.Process/Start", x_api_key=API_KEY) is None
    assert _check(path="/process.Process/Start", x_access_token="access") is None
    assert _check(path="/execute", e2b_sandbox_port="49999", e2b_traffic_access_token="traffic") is None


def test_health_is_open_but_only_for_get() -> None:
    assert _check(path="/health") is None
    assert _check(method="POST", path="/health") == Refusal(401, "missing or invalid access token")


def test_wrong_or_missing_credentials() -> None:
    assert _check(path="/process.Process/Start") == Refusal(401, "missing or invalid access token")
    assert _check(path="/process.Process/Start", x_access_token="other") == Refusal(
        401, "access token present in header but does not match")
    assert _check(path="/process.Process/Start", x_api_key="e2b_" + "b" * 40) == Refusal(
        401, "missing or invalid access token")
    # The traffic token opens the code-interpreter port only.
    assert _check(path="/process.Process/Start", e2b_traffic_access_token="traffic") == Refusal(
        401, "missing or invalid access token")
    assert _check(path="/execute", e2b_sandbox_port="49999", e2b_traffic_access_token="access") == Refusal(
        401, "missing or invalid access token")


@pytest.mark.parametrize("path", ["/init", "//init", "/./init", "/files/../init", "init"])
def test_the_private_route_is_never_forwarded(path: str) -> None:
    assert is_private(path)
    assert _check(method="POST", path=path, x_api_key=API_KEY) == Refusal(
        403, f"{path} is not reachable through the sandbox proxy")


def test_other_paths_are_not_private() -> None:
    assert not is_private("/initial")
    assert not is_private("/files")


@pytest.mark.parametrize("username", ["user", "root", None])
@pytest.mark.parametrize("expires_in", [None, 600])
def test_urls_signed_by_the_sdk_are_accepted(username: str | None, expires_in: int | None) -> None:
    signed = get_signature("/home/user/a.txt", "read", username, "access", expires_in)
    query = {"path": "/home/user/a.txt", "signature": signed["signature"]}
    if username is not None:
        query["username"] = username
    if signed["expiration"] is not None:
        query["signature_expiration"] = str(signed["expiration"])
    assert _check(query=query) is None
    # The same signature does not authorise a write.
    assert _check(method="POST", query=query) == Refusal(401, "invalid signature")


def test_signatures_cover_path_user_and_expiry() -> None:
    expiry = int(time.time()) + 600
    good = sign("/a", "write", "user", "access", expiry)
    base = {"path": "/a", "username": "user", "signature": good, "signature_expiration": str(expiry)}
    assert _check(method="POST", query=base) is None
    for changed in ({"path": "/b"}, {"username": "root"}, {"signature_expiration": str(expiry + 1)}):
        assert _check(method="POST", query={**base, **changed}) == Refusal(401, "invalid signature")


def test_an_expired_signature_is_refused() -> None:
    expiry = int(time.time()) - 1
    query = {"path": "/a", "signature": sign("/a", "read", "", "access", expiry), "signature_expiration": str(expiry)}
    assert _check(query=query) == Refusal(401, "signature is already expired")


def test_malformed_signed_queries() -> None:
    good = sign("/a", "read", "", "access", None)
    assert _check(query={"path": "/a"}) == Refusal(401, "missing access token or signature")
    assert _check(method="DELETE", query={"path": "/a", "signature": good}) == Refusal(
        401, "missing access token or signature")
    assert _check(query=f"path=/a&path=/b&signature={good}") == Refusal(
        400, "the query parameter 'path' may appear only once")
    assert _check(query={"path": "/a", "signature": good, "signature_expiration": "soon"}) == Refusal(
        400, "signature_expiration must be an integer")
    # Signatures open /files only.
    assert _check(path="/filesystem.Filesystem/Stat", query={"path": "/a", "signature": good}) == Refusal(
        401, "missing or invalid access token")


def test_an_access_token_header_wins_over_a_signature() -> None:
    good = sign("/a", "read", "", "access", None)
    assert _check(query={"path": "/a", "signature": good}, x_access_token="wrong") == Refusal(
        401, "access token present in header but does not match")


def test_refusal_bodies_match_what_each_client_parses() -> None:
    # Connect clients read a string code; envd's REST clients a numeric one.
    assert refusal_body(Refusal(401, "no"), "/process.Process/Start") == {"code": "unauthenticated", "message": "no"}
    assert refusal_body(Refusal(403, "no"), "/filesystem.Filesystem/Stat") == {"code": "permission_denied",
                                                                               "message": "no"}
    assert refusal_body(Refusal(400, "no"), "/process.Process/List") == {"code": "invalid_argument", "message": "no"}
    assert refusal_body(Refusal(401, "no"), "/files") == {"code": 401, "message": "no"}


@pytest.mark.parametrize("path", ["/journal", "//journal", "/files/../journal"])
def test_the_agent_journal_is_never_forwarded(path: str) -> None:
    assert _check(method="GET", path=path, x_api_key=API_KEY) == Refusal(
        403, f"{path} is not reachable through the sandbox proxy")
