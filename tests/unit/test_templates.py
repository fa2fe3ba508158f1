"""The template API in-process: what is answered before any build runs, and what outlives a restart."""

from __future__ import annotations

import contextlib
import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from e2b_local.control.server import Server
from e2b_local.control.templates.service import CACHED_LOGS, MAX_LOG_ENTRIES
from e2b_local.isolation.idranges import RANGE_FILE
from e2b_local.isolation.rootfs import HOST_ID_BASE
from e2b_local.settings import Settings

API_KEY = "e2b_" + "0" * 40


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    # The storage range, recorded: no host-wide claim under /var/lib is needed for it.
    (home / RANGE_FILE).write_text(str(HOST_ID_BASE))
    return home


@contextlib.contextmanager
def _client(home: Path) -> Iterator[TestClient]:
    server = Server(Settings(home=home, rootfs=home.parent / "rootfs"), API_KEY)
    # Not entered as a context manager: the lifespan (adopting and booting sandboxes) never runs.
    http = TestClient(server, base_url="http://127.0.0.1", headers={"X-API-Key": API_KEY})
    try:
        yield http
    finally:
        http.close()
        server.templates.registry.close()
        server.fleet.registry.close()


def test_an_upload_link_still_works_after_a_restart(home: Path) -> None:
    files_hash = hashlib.sha256(b"context").hexdigest()
    with _client(home) as client:
        created = client.post("/v3/templates", json={"name": "uploads"})
        assert created.status_code == 202
        link = client.get(f"/templates/{created.json()['templateID']}/files/{files_hash}")
        assert link.status_code == 201 and link.json()["present"] is False
        url = urlsplit(link.json()["url"])

    key_file = home / "template-upload-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with _client(home) as client:
        # Without the API key, as the SDK uploads; signed by the server that ran before.
        upload = client.put(f"{url.path}?{url.query}", content=b"archive", headers={"X-API-Key": ""})
        assert upload.status_code == 200
        forged = client.put(f"{url.path}?signature={'0' * 64}", content=b"archive", headers={"X-API-Key": ""})
        assert forged.status_code == 403 and forged.json()["message"] == "invalid upload signature"
        again = client.get(link.request.url.path)
        assert again.json()["present"] is True


def test_a_damaged_upload_key_is_replaced(home: Path) -> None:
    key_file = home / "template-upload-key"
    key_file.write_text("not hex\n")
    with _client(home):
        assert len(bytes.fromhex(key_file.read_text().strip())) == 32


def test_build_logs_are_bounded_and_outlive_the_memory_cache(home: Path) -> None:
    with _client(home) as client:
        service = client.app.templates  # type: ignore[attr-defined]
        _, build = service.request("chatty", [], None, None)
        for i in range(MAX_LOG_ENTRIES + 50):
            service.log(build, "info", f"line {i}", step="1")
        service.log(build, "error", "the step failed", step="1")
        entries = service.entries(build.build_id)
        assert len(entries) == MAX_LOG_ENTRIES + 2
        assert entries[MAX_LOG_ENTRIES - 1]["message"] == f"line {MAX_LOG_ENTRIES - 1}"
        assert entries[MAX_LOG_ENTRIES]["message"] == f"Build output past {MAX_LOG_ENTRIES} lines is not kept"
        assert entries[-1]["message"] == "the step failed"  # errors are kept past the bound

        others = [service.request(f"quiet-{i}", [], None, None)[1] for i in range(CACHED_LOGS + 4)]
        for other in others:
            service.log(other, "info", f"only line of {other.build_id}")
        assert len(service.logs) == CACHED_LOGS and build.build_id not in service.logs
        # Read back from its file, through the API as the SDK reads it.
        status = client.get(f"/templates/{build.template_id}/builds/{build.build_id}/status",
                            params={"logsOffset": MAX_LOG_ENTRIES - 1, "limit": 5})
        assert [e["message"] for e in status.json()["logEntries"]] == [
            f"line {MAX_LOG_ENTRIES - 1}", f"Build output past {MAX_LOG_ENTRIES} lines is not kept",
            "the step failed"]
        assert status.json()["logEntries"][1]["level"] == "warn"

        log_file = home / "templates" / "logs" / f"{build.build_id}.jsonl"
        assert log_file.is_file()
        assert client.delete("/templates/chatty").status_code == 204
        assert not log_file.exists()
