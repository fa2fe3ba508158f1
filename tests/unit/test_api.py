"""What the control-plane API answers to bad requests, read as the SDK reads it.

The real application runs in-process under Starlette's test client, on a fresh data directory and
without its lifespan: no sandbox is started, so every request here is one that is answered before
a sandbox would be.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from e2b.api import handle_api_exception
from e2b.exceptions import AuthenticationException, SandboxException
from starlette.testclient import TestClient

from e2b_local.control.server import Server
from e2b_local.isolation.idranges import RANGE_FILE
from e2b_local.isolation.rootfs import HOST_ID_BASE
from e2b_local.settings import Settings

API_KEY = "e2b_" + "0" * 40
MISSING = "abcdefghij0123456789"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One application for the module: no request here changes its state."""
    root = tmp_path_factory.mktemp("api")
    home = root / "home"
    home.mkdir()
    # The storage range, recorded: no host-wide claim under /var/lib is needed for it.
    (home / RANGE_FILE).write_text(str(HOST_ID_BASE))
    server = Server(Settings(home=home, rootfs=root / "rootfs"), API_KEY)
    # Not entered as a context manager: the lifespan (adopting and booting sandboxes) never runs.
    http = TestClient(server, base_url="http://127.0.0.1", headers={"X-API-Key": API_KEY})
    try:
        yield http
    finally:
        http.close()
        server.fleet.registry.close()


def _refused(response: httpx.Response, status: int, message: str) -> None:
    """The answer is an E2B error body that the SDK turns into `status: message`."""
    assert response.status_code == status, response.text
    assert response.json() == {"code": status, "message": message}
    assert response.headers["should-retry"] == "false"
    error = handle_api_exception(response)
    assert isinstance(error, SandboxException)
    assert str(error) == f"{status}: {message}"


def _create(client: TestClient, body: object) -> httpx.Response:
    return client.post("/sandboxes", json=body)


def test_the_api_key_is_required(client: TestClient) -> None:
    response = client.get("/v2/sandboxes", headers={"X-API-Key": "e2b_" + "1" * 40})
    assert (response.status_code, response.json()) == (401, {"code": 401, "message": "Invalid API key"})
    assert isinstance(handle_api_exception(response), AuthenticationException)
    assert client.get("/health", headers={"X-API-Key": ""}).json()["status"] == "ok"


def test_a_body_that_is_not_json(client: TestClient) -> None:
    response = client.post("/sandboxes", content=b"{not json", headers={"Content-Type": "application/json"})
    _refused(response, 400, "the request body is not valid JSON")


def test_a_body_that_is_not_an_object(client: TestClient) -> None:
    _refused(_create(client, ["base"]), 400, "the request body must be a JSON object")


def test_a_body_past_a_mebibyte_is_refused_and_the_connection_closed(client: TestClient) -> None:
    response = _create(client, {"metadata": {"k": "x" * (1024 * 1024)}})
    _refused(response, 413, "request body too large: control-plane requests are limited to 1048576 bytes")
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize(("body", "message"), [
    ({"templateID": 7}, "'templateID' must be a string"),
    ({"timeout": "60"}, "'timeout' must be an integer"),
    ({"timeout": True}, "'timeout' must be an integer"),
    ({"timeout": 1.5}, "'timeout' must be an integer"),
    ({"timeout": -1}, "timeout must be between 0 and 86400 seconds"),
    ({"timeout": 86401}, "timeout must be between 0 and 86400 seconds"),
    ({"metadata": {"k": 1}}, "'metadata' must be an object of strings"),
    ({"metadata": ["k"]}, "'metadata' must be an object of strings"),
    ({"metadata": {"k" * 257: "v"}}, "'metadata' keys must be at most 256 bytes long"),
    ({"metadata": {"é" * 129: "v"}}, "'metadata' keys must be at most 256 bytes long"),
    ({"metadata": {"k": "v" * (16 * 1024 + 1)}}, "'metadata' value of 'k' is longer than 16384 bytes"),
    ({"envVars": {"A": 1}}, "'envVars' must be an object of strings"),
    ({"envVars": "A=1"}, "'envVars' must be an object of strings"),
    ({"autoPause": "yes"}, "'autoPause' must be a boolean"),
    ({"autoPause": True, "autoResume": {"enabled": "on"}}, "'autoResume.enabled' must be a boolean"),
    ({"autoPause": True, "autoResume": 1}, "'autoResume' must be a boolean"),
    ({"autoPauseMemory": "no"}, "'autoPauseMemory' must be a boolean"),
    ({"autoResume": {"enabled": True}}, "autoResume needs autoPause: only a paused sandbox can be resumed"),
    ({"autoPause": False, "autoResume": True}, "autoResume needs autoPause: only a paused sandbox can be resumed"),
    ({"autoPause": True, "autoPauseMemory": False, "autoResume": {"enabled": True}},
     "autoResume cannot be combined with a filesystem-only auto-pause (autoPauseMemory: false)"),
    ({"network": {"rules": [{"host": "x"}]}},
     "network 'rules' must be an object of host names to lists of rules"),
    ({"network": {"denyOut": ["example.com"]}}, "invalid denied CIDR example.com"),
])
def test_create_refuses_bad_fields(client: TestClient, body: dict[str, object], message: str) -> None:
    _refused(_create(client, body), 400, message)


def test_limits_themselves_are_accepted(client: TestClient) -> None:
    # Keys and values at the limits pass; the request then fails on its timeout, checked after them.
    body = {"metadata": {"é" * 128: "v" * (16 * 1024)}, "envVars": {"A": "1"}, "timeout": 86401,
            "autoPause": True, "autoResume": {"enabled": True}}
    _refused(_create(client, body), 400, "timeout must be between 0 and 86400 seconds")


def test_an_unknown_template_is_not_found(client: TestClient) -> None:
    _refused(_create(client, {"templateID": "no-such-template"}), 404, "template 'no-such-template' not found")
    _refused(_create(client, {"templateID": "local/no-such:v1"}), 404, "template 'local/no-such:v1' not found")


def test_an_empty_list(client: TestClient) -> None:
    response = client.get("/v2/sandboxes")
    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["x-total-running"] == "0"
    assert "x-next-token" not in response.headers
    assert client.get("/sandboxes").json() == []


def _token(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


@pytest.mark.parametrize(("params", "message"), [
    ({"state": "running,stopped"}, "unknown state 'stopped'"),
    ({"limit": "ten"}, "'limit' must be an integer"),
    ({"limit": "0"}, "'limit' must be at least 1"),
    ({"limit": "-5"}, "'limit' must be at least 1"),
    ({"nextToken": "!!!"}, "'nextToken' is not a token this server issued"),
    ({"nextToken": _token(b"-1")}, "'nextToken' is not a token this server issued"),
    ({"nextToken": _token(b" 10")}, "'nextToken' is not a token this server issued"),
    ({"nextToken": _token("١٢".encode())}, "'nextToken' is not a token this server issued"),
    ({"startedAfter": "yesterday"}, "invalid time 'yesterday'"),
])
def test_list_refuses_bad_parameters(client: TestClient, params: dict[str, str], message: str) -> None:
    _refused(client.get("/v2/sandboxes", params=params), 400, message)


def test_list_accepts_what_the_sdk_sends(client: TestClient) -> None:
    params = {"state": "running,paused", "limit": "1000", "metadata": "team%3Da", "nextToken": _token(b"0"),
              "startedAfter": "2026-01-02T03:04:05Z", "order": "asc"}
    assert client.get("/v2/sandboxes", params=params).json() == []


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", f"/sandboxes/{MISSING}", None),
    ("DELETE", f"/sandboxes/{MISSING}", None),
    ("POST", f"/sandboxes/{MISSING}/timeout", {"timeout": 60}),
    ("POST", f"/sandboxes/{MISSING}/refreshes", {}),
    ("GET", f"/sandboxes/{MISSING}/metrics", None),
    ("POST", f"/sandboxes/{MISSING}/pause", {}),
    ("POST", f"/v2/sandboxes/{MISSING}/connect", {"timeout": 60}),
    ("POST", f"/sandboxes/{MISSING}/snapshots", {}),
    ("POST", f"/sandboxes/{MISSING}/fork", {"count": 2}),
    ("PUT", f"/sandboxes/{MISSING}/network", {"denyOut": ["10.0.0.0/8"]}),
])
def test_an_unknown_sandbox_is_not_found(client: TestClient, method: str, path: str, body: object) -> None:
    _refused(client.request(method, path, json=body), 404, f"sandbox '{MISSING}' not found")


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/timeout", {}, "'timeout' is required"),
    ("/timeout", {"timeout": "5"}, "'timeout' must be an integer"),
    ("/refreshes", {"duration": "5"}, "'duration' must be an integer"),
    ("/pause", {"memory": "yes"}, "'memory' must be a boolean"),
    ("/connect", {"memory": 1}, "'memory' must be a boolean"),
    ("/snapshots", {"name": 5}, "'name' must be a string"),
    ("/snapshots", {"name": "base"}, "'base' is a built-in template name; choose another snapshot name"),
    ("/snapshots", {"name": "bad name"}, "invalid snapshot name 'bad name': use letters, digits, '.', '_' and '-'"),
    ("/fork", {"count": 0}, "count must be between 1 and 20"),
    ("/fork", {"count": 21}, "count must be between 1 and 20"),
    ("/fork", {"count": "2"}, "'count' must be an integer"),
])
def test_sandbox_routes_check_their_bodies_first(client: TestClient, path: str, body: object, message: str) -> None:
    _refused(client.post(f"/sandboxes/{MISSING}{path}", json=body), 400, message)


def test_snapshots_list_and_delete(client: TestClient) -> None:
    response = client.get("/snapshots", params={"limit": "5"})
    assert (response.status_code, response.json()) == (200, [])
    _refused(client.delete("/templates/local%2Fapp%3Av1"), 404, "snapshot 'local/app:v1' not found")


def test_an_unknown_route_answers_in_the_error_shape(client: TestClient) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"code": 404, "message": "Not Found"}


def test_secrets_are_created_listed_and_updated_without_their_values(client: TestClient) -> None:
    from e2b.api.client.models import Secret as SecretModel
    created = client.post("/secrets", json={"name": "Unit-Token", "value": "s3cr3t-unit", "metadata": {"a": "b"}})
    assert created.status_code == 201, created.text
    model = SecretModel.from_dict(created.json())
    assert model.name == "unit-token" and model.current_version == 1 and model.secret_id.startswith("sec_")
    try:
        assert "s3cr3t-unit" not in created.text
        assert client.post("/secrets", json={"name": "unit-token", "value": "x"}).status_code == 409
        listed = client.get("/secrets")
        assert listed.status_code == 200 and "s3cr3t-unit" not in listed.text
        assert model.secret_id in [s["secretID"] for s in listed.json()]
        updated = client.post(f"/secrets/{model.name}", json={"value": "v2"})
        assert updated.status_code == 200 and updated.json()["currentVersion"] == 2
        assert updated.json()["metadata"] == {"a": "b"}
        assert client.get(f"/secrets/{model.secret_id}").json()["currentVersion"] == 2
    finally:
        assert client.delete(f"/secrets/{model.secret_id}").status_code == 204
    assert client.get(f"/secrets/{model.secret_id}").status_code == 404
    assert client.delete(f"/secrets/{model.secret_id}").status_code == 404


@pytest.mark.parametrize(("body", "message"), [
    ({"value": "v"}, "'name' must be a non-empty string"),
    ({"name": "a{b", "value": "v"}, "a secret name cannot contain '{', '}' or control characters, "
                                    "and has at most 255 characters"),
    ({"name": "sec_x", "value": "v"}, "the 'sec_' prefix is reserved for secret identifiers"),
    ({"name": "ok", "value": ""}, "'value' must be a non-empty string"),
    ({"name": "ok", "value": "v", "metadata": {"k": 1}}, "'metadata' must be an object of strings"),
])
def test_bad_secrets_are_refused(client: TestClient, body: object, message: str) -> None:
    response = client.post("/secrets", json=body)
    assert response.status_code == 400 and response.json()["message"] == message
