"""Malformed input to the control plane and to the agent's RPCs: refused with 400 and the field named."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

import httpx
import pytest
from conftest import LocalServer
from e2b import Sandbox


@pytest.fixture(scope="module")
def sbx(e2b_server: LocalServer) -> Iterator[Sandbox]:
    sandbox = Sandbox.create()
    yield sandbox
    sandbox.kill()


def _create(server: LocalServer, body: dict[str, object]) -> httpx.Response:
    return httpx.post(server.url + "/v2/sandboxes", json=body, headers={"X-API-Key": server.api_key}, timeout=60)


@pytest.mark.parametrize(("body", "field"), [
    ({"autoResume": "yes", "autoPause": True}, "autoResume"),
    ({"autoResume": {"enabled": "yes"}, "autoPause": True}, "autoResume.enabled"),
    ({"autoPause": "maybe"}, "autoPause"),
    ({"autoPause": True, "autoPauseMemory": "no"}, "autoPauseMemory"),
    ({"metadata": {"big": "x" * 20_000}}, "metadata"),
    ({"metadata": {"k" * 300: "v"}}, "metadata"),
    ({"metadata": {"n": 5}}, "metadata"),
])
def test_create_refuses_wrong_types_and_sizes(e2b_server: LocalServer, body: dict[str, object], field: str) -> None:
    response = _create(e2b_server, {"templateID": "base", **body})
    assert response.status_code == 400, response.text
    assert f"'{field}'" in response.json()["message"]


def test_create_refuses_megabyte_bodies(e2b_server: LocalServer) -> None:
    for size in (2 * 1024 * 1024, 20 * 1024 * 1024):
        response = _create(e2b_server, {"templateID": "base", "metadata": {"big": "x" * size}})
        assert response.status_code == 413 and "too large" in response.json()["message"]


@pytest.mark.parametrize("decoded", [b"-5", b" 1", b"1_0", b"\xff", b"+2"])
def test_list_refuses_a_forged_next_token(e2b_server: LocalServer, decoded: bytes) -> None:
    token = base64.urlsafe_b64encode(decoded).decode().rstrip("=")
    response = httpx.get(e2b_server.url + "/v2/sandboxes", params={"nextToken": token},
                         headers={"X-API-Key": e2b_server.api_key}, timeout=30)
    assert response.status_code == 400 and "'nextToken'" in response.json()["message"]


def _envd(sbx: Sandbox, content_type: str) -> dict[str, str]:
    return {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": sbx._envd_access_token,
            "Content-Type": content_type, "Connect-Protocol-Version": "1"}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"path": 5}'])
def test_invalid_json_to_a_unary_rpc_is_a_400(e2b_server: LocalServer, sbx: Sandbox, body: bytes) -> None:
    response = httpx.post(e2b_server.url + "/filesystem.Filesystem/Stat", content=body,
                          headers=_envd(sbx, "application/json"), timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_argument"


@pytest.mark.parametrize("body", [
    struct.pack(">BI", 0, 100) + b'{"process"',  # the message is shorter than its envelope says
    b"\x00\x00",  # the envelope's own head is cut
])
def test_truncated_connect_envelope_is_a_protocol_error(e2b_server: LocalServer, sbx: Sandbox, body: bytes) -> None:
    response = httpx.post(e2b_server.url + "/process.Process/Start", content=body,
                          headers=_envd(sbx, "application/connect+json"), timeout=30)
    assert "was not found" not in response.text
    flags, length = struct.unpack(">BI", response.content[:5])
    assert flags & 0x02, response.content  # an end-of-stream message carrying the error
    error = json.loads(response.content[5:5 + length])["error"]
    assert error["code"] == "invalid_argument" and "truncated" in error["message"]
    assert sbx.commands.run("echo -n ok").stdout == "ok"  # the sandbox is unaffected
