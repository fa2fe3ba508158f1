"""Lifecycle events (`/events/sandboxes`) and webhooks (`/events/webhooks`) over REST, with real sandboxes.

The SDK has no call for these: E2B documents them as REST endpoints, so httpx drives them here.
Webhook deliveries go to a receiver on loopback started by the test (the server sends them, not a sandbox).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import start_server, stop_server
from e2b import Sandbox

ALL_TYPES = ["sandbox.lifecycle.created", "sandbox.lifecycle.updated", "sandbox.lifecycle.paused",
             "sandbox.lifecycle.resumed", "sandbox.lifecycle.checkpointed", "sandbox.lifecycle.killed"]
DELIVERY_DEADLINE = 60


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every delivery; `stop` and `start` take it down and up."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        received = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events_of(self, sandbox_id: str) -> list[dict]:
        return [e for e in (json.loads(body) for _, body in list(self.deliveries)) if e["sandboxId"] == sandbox_id]

    def wait_for(self, sandbox_id: str, types: list[str]) -> list[dict]:
        deadline = time.monotonic() + DELIVERY_DEADLINE
        while time.monotonic() < deadline:
            found = self.events_of(sandbox_id)
            if all(t in [e["type"] for e in found] for t in types):
                return found
            time.sleep(0.2)
        raise AssertionError(f"not delivered in time: {types}, got {[e['type'] for e in self.events_of(sandbox_id)]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.start()
    yield found
    found.stop()


def _signature(secret: str, body: bytes) -> str:
    # As E2B's documentation verifies it.
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode() + body).digest()).decode().rstrip("=")


def _api(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=30)


def _register(api: httpx.Client, url: str, secret: str, events: list[str] = ALL_TYPES) -> dict:
    response = api.post("/events/webhooks", json={"name": "test hook", "url": url, "enabled": True,
                                                  "events": events, "signatureSecret": secret})
    assert response.status_code == 201, response.text
    return response.json()


def test_events_of_a_create_pause_resume_kill_sequence(e2b_server) -> None:
    sandbox = Sandbox.create(metadata={"job": "events-test"})
    sandbox.set_timeout(120)
    sandbox.pause()
    sandbox.connect()
    snapshot = sandbox.create_snapshot()
    sandbox.kill()
    Sandbox.delete_snapshot(snapshot.snapshot_id)
    with _api(e2b_server) as api:
        events = api.get(f"/events/sandboxes/{sandbox.sandbox_id}", params={"orderAsc": "true", "limit": 100}).json()
        assert [e["type"] for e in events] == [
            "sandbox.lifecycle.created", "sandbox.lifecycle.updated", "sandbox.lifecycle.paused",
            "sandbox.lifecycle.resumed", "sandbox.lifecycle.checkpointed", "sandbox.lifecycle.killed"]
        for event in events:
            assert event["sandboxId"] == sandbox.sandbox_id and event["sandboxTemplateId"] == "base"
            assert {"id", "version", "timestamp", "sandboxBuildId", "sandboxExecutionId", "sandboxTeamId",
                    "eventData"} <= event.keys()
            assert event["eventData"]["sandbox_metadata"] == {"job": "events-test"}
        assert len({e["id"] for e in events}) == len(events)
        assert "set_timeout" in events[1]["eventData"]
        assert events[2]["eventData"]["execution"]["vcpu_count"] >= 1
        assert events[4]["eventData"]["snapshot_id"] == snapshot.snapshot_id

        newest_first = api.get(f"/events/sandboxes/{sandbox.sandbox_id}", params={"limit": 100}).json()
        assert [e["id"] for e in newest_first] == [e["id"] for e in reversed(events)]
        # The default page is 10, newest first; offset and limit page through.
        page = api.get(f"/events/sandboxes/{sandbox.sandbox_id}",
                       params={"orderAsc": "true", "offset": 1, "limit": 2}).json()
        assert [e["id"] for e in page] == [e["id"] for e in events[1:3]]
        paused = api.get(f"/events/sandboxes/{sandbox.sandbox_id}",
                         params=[("types", "sandbox.lifecycle.paused"), ("types", "sandbox.lifecycle.killed")]).json()
        assert [e["type"] for e in paused] == ["sandbox.lifecycle.killed", "sandbox.lifecycle.paused"]
        team = api.get("/events/sandboxes", params={"limit": 100}).json()
        assert {e["id"] for e in events} <= {e["id"] for e in team}
        for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"types": "sandbox.lifecycle.nope"}):
            response = api.get("/events/sandboxes", params=bad)
            assert response.status_code == 400, bad
            assert response.json()["code"] == 400


def test_webhook_registration_listing_update_and_deletion(e2b_server) -> None:
    with _api(e2b_server) as api:
        created = _register(api, "http://127.0.0.1:9/hook", "s3cret", ["sandbox.lifecycle.created"])
        assert created["enabled"] is True and created["events"] == ["sandbox.lifecycle.created"]
        assert "signatureSecret" not in created and {"id", "teamID", "createdAt", "name", "url"} <= created.keys()
        hook = f"/events/webhooks/{created['id']}"
        assert created["id"] in [w["id"] for w in api.get("/events/webhooks").json()]
        assert api.get(hook).json() == created

        updated = api.patch(hook, json={"enabled": False, "events": ["sandbox.lifecycle.killed"]})
        assert updated.status_code == 200
        assert updated.json() == {**created, "enabled": False, "events": ["sandbox.lifecycle.killed"]}
        assert api.get(hook).json()["enabled"] is False

        for bad in ({"url": "ftp://x"}, {"events": []}, {"events": ["sandbox.lifecycle.nope"]}, {"enabled": "yes"}):
            response = api.patch(hook, json=bad)
            assert response.status_code == 400, bad
        missing = api.post("/events/webhooks", json={"url": "http://127.0.0.1:9/", "events": ALL_TYPES})
        assert missing.status_code == 400

        assert api.delete(hook).status_code == 200
        assert api.get(hook).status_code == 404
        assert api.delete(hook).status_code == 404
        assert created["id"] not in [w["id"] for w in api.get("/events/webhooks").json()]


def _check_once_and_signed(receiver: Receiver, sandbox_id: str, secret: str, webhook_id: str,
                           types: list[str]) -> None:
    mine = [(h, b) for h, b in receiver.deliveries if json.loads(b)["sandboxId"] == sandbox_id]
    assert sorted(json.loads(b)["type"] for _, b in mine) == sorted(types)
    assert len({json.loads(b)["id"] for _, b in mine}) == len(mine)  # each event once
    for headers, body in mine:
        assert headers["e2b-signature"] == _signature(secret, body)
        assert headers["e2b-signature-version"] == "v1"
        assert headers["e2b-webhook-id"] == webhook_id and headers["e2b-delivery-id"]


def test_a_webhook_gets_every_event_once_signed_even_while_briefly_down(e2b_server, receiver: Receiver) -> None:
    with _api(e2b_server) as api:
        secret = "webhook-test-secret"
        hook = _register(api, receiver.url, secret)
        try:
            sandbox = Sandbox.create()
            sandbox.pause()
            receiver.wait_for(sandbox.sandbox_id, ["sandbox.lifecycle.created", "sandbox.lifecycle.paused"])

            receiver.stop()  # these two happen while the receiver is down
            sandbox.connect()
            sandbox.kill()
            time.sleep(1.5)  # long enough for the first attempt to fail
            receiver.start()
            receiver.wait_for(sandbox.sandbox_id, ["sandbox.lifecycle.resumed", "sandbox.lifecycle.killed"])
            _check_once_and_signed(receiver, sandbox.sandbox_id, secret, hook["id"], [
                "sandbox.lifecycle.created", "sandbox.lifecycle.paused", "sandbox.lifecycle.resumed",
                "sandbox.lifecycle.killed"])
            order = [e["type"] for e in receiver.events_of(sandbox.sandbox_id)]
            assert order.index("sandbox.lifecycle.resumed") < order.index("sandbox.lifecycle.killed")
        finally:
            api.delete(f"/events/webhooks/{hook['id']}")


def test_undelivered_events_survive_a_server_restart(tmp_path, receiver: Receiver) -> None:
    server = start_server(tmp_path / "home")
    secret = "restart-secret"
    try:
        with _api(server) as api:
            hook = _register(api, receiver.url, secret, ["sandbox.lifecycle.created", "sandbox.lifecycle.killed"])
        receiver.stop()
        sandbox = Sandbox.create(**server.sdk)
        sandbox.kill()
    finally:
        stop_server(server)
    server = start_server(tmp_path / "home", port=int(server.url.rsplit(":", 1)[1]))
    try:
        receiver.start()
        receiver.wait_for(sandbox.sandbox_id, ["sandbox.lifecycle.created", "sandbox.lifecycle.killed"])
        _check_once_and_signed(receiver, sandbox.sandbox_id, secret, hook["id"],
                               ["sandbox.lifecycle.created", "sandbox.lifecycle.killed"])
    finally:
        stop_server(server)
