"""The web dashboard in a real headless Chromium (Debian's, driven by Playwright) against real sandboxes.

Each page is also written as a screenshot under the test's temporary directory, and each screenshot is
checked: a PNG of the viewport's size whose pixels are not one flat colour.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ROOTFS_CACHE, LocalServer
from e2b import Sandbox

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}
# Samples come every 5 s and the chart refreshes every 2.5 s: a new point within this is due.
CHART_WAIT_MS = 30_000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt install chromium)")


def check_screenshot(path: Path) -> None:
    """A PNG of the viewport's size with more than a flat colour in it (its scanlines decoded enough to tell)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"]), path
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            chunks.append(data[offset + 8:offset + 8 + length])
        offset += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    channels = {2: 3, 6: 4}[colour]
    assert depth == 8 and len(raw) == height * (1 + width * channels), path
    # A blank page compresses to a handful of byte values whatever the row filters; text and a chart do not.
    assert len(set(raw)) > 32, f"{path} looks blank"


def dashboard_link(server: LocalServer) -> str:
    env = {**os.environ, "E2B_LOCAL_HOME": str(server.home), "E2B_LOCAL_ROOTFS": ROOTFS_CACHE}
    result = subprocess.run([sys.executable, "-m", "e2b_local", "dashboard"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert link.startswith(server.url + "/dashboard/login?token="), link
    return link


@pytest.fixture
def box(e2b_server: LocalServer) -> Iterator[Sandbox]:
    sbx = Sandbox.create(metadata={"dash": uuid.uuid4().hex[:8], "note": "<b>x</b>"}, **e2b_server.sdk)
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):
            Sandbox.kill(sbx.sandbox_id, **e2b_server.sdk)


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright_sync.sync_playwright() as p:
        # As root Chromium's own sandbox cannot start; the page is ours, served from localhost.
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def test_refused_without_the_key(e2b_server: LocalServer, box: Sandbox, browser) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{e2b_server.url}/dashboard/sandboxes/{box.sandbox_id}")
    assert "/dashboard/login" in page.url
    page.fill("#key", "e2b_not_the_key")
    page.click("button[type=submit]")
    assert page.locator(".failure").inner_text() == "Invalid API key"
    assert page.locator("table, [data-chart]").count() == 0  # still the login page, no sandbox shown
    # Without the cookie nothing is shown or done, whatever the client.
    plain = httpx.Client(base_url=e2b_server.url, follow_redirects=False)
    assert plain.get(f"/dashboard/sandboxes/{box.sandbox_id}").status_code == 303
    assert plain.post(f"/dashboard/sandboxes/{box.sandbox_id}/kill", data={"csrf": "x"}).status_code == 401
    assert plain.post("/dashboard/links").status_code == 401
    assert box.is_running()


def test_the_dashboard_end_to_end(e2b_server: LocalServer, box: Sandbox, browser, tmp_path: Path) -> None:
    sandbox_id = box.sandbox_id
    name = f"dash-{uuid.uuid4().hex[:6]}.txt"
    box.files.write(f"/home/user/{name}", "hello from the sandbox\n")
    box.commands.run("sleep 600", background=True)

    def shot(page, label: str) -> None:
        path = tmp_path / f"{label}.png"
        page.screenshot(path=str(path))
        check_screenshot(path)

    # Logged in with the key on the login page.
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{e2b_server.url}/dashboard")
    shot(page, "login")
    page.fill("#key", e2b_server.api_key)
    page.click("button[type=submit]")
    row = page.locator(f"tr[data-sandbox-id='{sandbox_id}']")
    assert row.locator(".state").inner_text() == "running"
    assert "base" in row.inner_text()
    assert "note=<b>x</b>" in row.inner_text()  # shown as text, not markup
    shot(page, "sandboxes")

    # One sandbox's page: the chart gets a new sample, the logs say it was created, the processes list the sleep.
    row.locator(f"a[href$='/sandboxes/{sandbox_id}']").click()
    page.wait_for_url(f"**/dashboard/sandboxes/{sandbox_id}")
    assert "sleep 600" in page.locator("table.processes").inner_text()
    # Waited for through Playwright's own locators: the page's CSP forbids evaluating strings in it.
    chart = page.locator("[data-chart] svg")
    samples = int(chart.get_attribute("data-samples") or 0)
    playwright_sync.expect(chart).not_to_have_attribute("data-samples", str(samples), timeout=CHART_WAIT_MS)
    assert int(chart.get_attribute("data-samples") or 0) > samples
    assert page.locator("[data-chart] polyline.cpu").get_attribute("points")
    # The sandbox logs API's lifecycle entry for its creation.
    playwright_sync.expect(page.locator("[data-logs]")).to_contain_text("Sandbox created", timeout=CHART_WAIT_MS)
    shot(page, "sandbox")

    # Its files, listed and downloaded through the agent.
    page.click("text=Browse files")
    page.wait_for_url("**/files")
    file_row = page.locator(f"tr[data-name='{name}']")
    assert "23 B" in file_row.inner_text()
    with page.expect_download() as download:
        file_row.locator("a.file").click()
    assert Path(download.value.path()).read_text() == "hello from the sandbox\n"
    shot(page, "files")
    page.click("text=..")
    assert page.locator("tr[data-name='user'] a.dir").count() == 1

    page.click("text=Templates")
    assert page.locator("tr[data-template='code-interpreter-v1']").count() == 1
    shot(page, "templates")

    # Killed from its page, after the confirmation; gone from the list and for the SDK.
    page.goto(f"{e2b_server.url}/dashboard/sandboxes/{sandbox_id}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("button[data-action=kill]")
    page.wait_for_url("**/dashboard?notice=killed")
    assert page.locator(".notice").inner_text() == "Sandbox killed."
    assert page.locator(f"tr[data-sandbox-id='{sandbox_id}']").count() == 0
    shot(page, "killed")
    assert sandbox_id not in {s.sandbox_id for s in Sandbox.list(**e2b_server.sdk).next_items()}


def test_a_one_time_link(e2b_server: LocalServer, box: Sandbox, browser) -> None:
    link = dashboard_link(e2b_server)
    first = browser.new_context(viewport=VIEWPORT).new_page()
    first.goto(link)
    assert first.url == f"{e2b_server.url}/dashboard"
    assert first.locator(f"tr[data-sandbox-id='{box.sandbox_id}']").count() == 1
    # Pause and resume from the page, with the session's form tokens.
    first.locator(f"tr[data-sandbox-id='{box.sandbox_id}'] button[data-action=pause]").click()
    first.wait_for_url("**?notice=paused")
    assert first.locator(".state").first.inner_text() == "paused"
    first.click("button[data-action=resume]")
    first.wait_for_url("**?notice=resumed")
    assert box.is_running()
    left = Sandbox.get_info(box.sandbox_id, **e2b_server.sdk).end_at
    first.click("button[data-action=extend]")
    first.wait_for_url("**?notice=extended")
    assert Sandbox.get_info(box.sandbox_id, **e2b_server.sdk).end_at > left
    # The same link a second time, in another browser: void.
    second = browser.new_context(viewport=VIEWPORT).new_page()
    second.goto(link)
    assert "/dashboard/login" in second.url
    assert "already used" in second.locator(".failure").inner_text()
