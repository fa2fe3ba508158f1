"""The events store, its webhook outbox and the delivery signature, in-process over a real registry."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

from e2b_local.control.registry import Registry, SandboxRecord
from e2b_local.control.services import events
from e2b_local.control.services.events import Events, Webhook
from e2b_local.control.services.sandbox_logs import SandboxLogs
from e2b_local.control.services.webhooks import MAX_RETRY, retry_delay, signature


def _record() -> SandboxRecord:
    now = time.time()
    return SandboxRecord(sandbox_id="s" * 20, template_id="base", key="k", access_token="t", started_at=now,
                         end_at=now + 60, metadata={"owner": "alice"})


def test_the_signature_is_what_e2b_documents() -> None:
    body = b'{"type":"sandbox.lifecycle.killed"}'
    # E2B's verification: sha256(secret + payload), base64, '+/' as '-_', '=' stripped.
    expected = base64.b64encode(hashlib.sha256(("secret" + body.decode()).encode()).digest()).decode()
    assert signature("secret", body) == expected.replace("+", "-").replace("/", "_").rstrip("=")


def test_retries_back_off_up_to_a_ceiling() -> None:
    delays = [retry_delay(n) for n in range(1, 12)]
    assert delays == sorted(delays) and delays[0] < delays[3] and delays[-1] == MAX_RETRY


def test_events_are_stored_and_queued_for_the_webhooks_that_want_them(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite3")
    store = Events(registry, SandboxLogs(registry))
    store.save_webhook(Webhook(id="w1", name="", url="http://127.0.0.1:9/", events=[events.KILLED],
                               signature_secret="x"))
    store.save_webhook(Webhook(id="w2", name="", url="http://127.0.0.1:9/", events=[events.KILLED],
                               enabled=False, signature_secret="x"))
    record = _record()
    store.emit(events.CREATED, record)
    store.emit(events.KILLED, record)
    listed = store.list(record.sandbox_id, [], 0, 10, ascending=True)
    assert [e["type"] for e in listed] == [events.CREATED, events.KILLED]
    assert listed[1]["eventData"]["sandbox_metadata"] == {"owner": "alice"}
    assert "execution" in listed[1]["eventData"] and "execution" not in listed[0]["eventData"]
    assert store.list(None, [events.CREATED], 0, 10, ascending=False) == listed[:1]
    # Only the enabled webhook that asked for `killed` has it waiting.
    pending = store.pending()
    assert [(webhook_id, attempts) for _, webhook_id, _, attempts, _ in pending] == [("w1", 0)]
    store.delivered(pending[0][0])
    assert store.pending() == []
    # The sandbox's logs got a line per event.
    lines = [e.message for e in store.logs.entries(record.sandbox_id)]
    assert lines == ["Sandbox created", "Sandbox killed"]
    assert store.delete_webhook("w1") and not store.delete_webhook("w1")
    registry.close()
