"""The dashboard's pure parts (sessions, one-time links, formatting, the chart) and its login, in-process.

The application is the real server's, under Starlette's test client without its lifespan: no sandbox
runs, so the pages here are the ones that need none (tests/local/test_dashboard.py drives a browser
against real sandboxes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from e2b_local.control.dashboard import views
from e2b_local.control.dashboard.sessions import LINK_SECONDS, SESSION_SECONDS, Sessions, csrf_ok, same_origin
from e2b_local.control.server import Server
from e2b_local.isolation.idranges import RANGE_FILE
from e2b_local.isolation.rootfs import HOST_ID_BASE
from e2b_local.settings import Settings

API_KEY = "e2b_" + "1" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_one_time_link_logs_in_once() -> None:
    sessions = Sessions(API_KEY)
    token = sessions.new_link()
    session = sessions.redeem(token)
    assert session is not None and sessions.get(session.session_id) is session
    assert sessions.redeem(token) is None
    assert sessions.redeem("made-up") is None
    assert sessions.redeem(None) is None


def test_links_and_sessions_expire() -> None:
    clock = Clock()
    sessions = Sessions(API_KEY, clock)
    token = sessions.new_link()
    session = sessions.open()
    clock.now += LINK_SECONDS + 1
    assert sessions.redeem(token) is None
    assert sessions.get(session.session_id) is session
    clock.now += SESSION_SECONDS
    assert sessions.get(session.session_id) is None


def test_logging_out_ends_the_session() -> None:
    sessions = Sessions(API_KEY)
    session = sessions.open()
    sessions.close(session.session_id)
    assert sessions.get(session.session_id) is None


def test_the_key_and_csrf_checks() -> None:
    sessions = Sessions(API_KEY)
    assert sessions.key_matches(API_KEY)
    assert not sessions.key_matches(API_KEY[:-1])
    assert not sessions.key_matches(None)
    session = sessions.open()
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, sessions.open().csrf)
    assert not csrf_ok(session, None)
    assert same_origin("http://127.0.0.1:49980", "127.0.0.1:49980", "http")
    assert not same_origin("http://evil.example", "127.0.0.1:49980", "http")
    assert not same_origin("https://127.0.0.1:49980", "127.0.0.1:49980", "http")


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (-5, "0s"), (45, "45s"), (185, "3m 05s"), (7800, "2h 10m"), (4 * 86400 + 3 * 3600, "4d 3h")])
def test_durations(seconds: float | None, text: str) -> None:
    assert views.duration(seconds) == text


@pytest.mark.parametrize(("value", "text"), [
    (512, "512 B"), ("1536", "1.5 KiB"), (12 * 1024 * 1024, "12.0 MiB"), (3 * 1024**4, "3072.0 GiB"), ("x", "-")])
def test_sizes(value: object, text: str) -> None:
    assert views.size(value) == text


def test_paths_up_and_down() -> None:
    assert views.parent("/home/user/") == "/home"
    assert views.parent("/") is None
    assert views.parent("/../..") is None
    assert views.breadcrumbs("/home/user") == [("/", "/"), ("home", "/home"), ("user", "/home/user")]


def test_a_listed_sandbox_row() -> None:
    row = views.sandbox_row({"sandboxID": "abc", "templateID": "tpl", "alias": "base", "state": "running",
                             "metadata": {"k": "v"}, "startedAt": "2025-01-01T00:00:00Z",
                             "endAt": "2025-01-01T00:05:00.000Z", "cpuCount": 2, "memoryMB": 1024},
                            views.parse_time("2025-01-01T00:01:00Z") or 0)
    assert row["template"] == "base" and row["age"] == "1m 00s" and row["left"] == "4m 00s"
    assert row["left_seconds"] == 240 and row["metadata"] == {"k": "v"}
    paused = views.sandbox_row({"sandboxID": "abc", "state": "paused", "endAt": "2025-01-01T00:05:00Z"}, 0)
    assert paused["left"] == "-" and paused["left_seconds"] is None


def test_the_chart_puts_the_newest_sample_at_the_right_edge() -> None:
    samples = [{"timestamp": f"t{i}", "cpuUsedPct": pct, "memUsed": 256, "memTotal": 1024}
               for i, pct in enumerate((0.0, 50.0, 100.0))]
    chart = views.chart(samples, count=3)
    assert chart.cpu_points == f"0.0,{views.CHART_HEIGHT:.1f} 300.0,80.0 600.0,0.0"
    assert chart.mem_points == "0.0,120.0 300.0,120.0 600.0,120.0"
    assert chart.samples == 3 and chart.last_timestamp == "t2" and chart.cpu_now == "100.0%"
    assert chart.mem_now == "256 B of 1.0 KiB"
    # Fewer samples than the chart holds fill it from the right; out-of-range values are clamped.
    assert views.chart([{"cpuUsedPct": 250, "memTotal": 0}], count=3).cpu_points == "600.0,0.0"
    assert views.chart([]).cpu_points == "" and views.chart([]).cpu_now == "-"


def test_log_lines_of_either_shape() -> None:
    assert views.log_lines({"logs": [{"timestamp": "t", "line": "hello"}]}) == ["t hello"]
    assert views.log_lines({"logEntries": [{"timestamp": "t", "level": "info", "message": "m"}]}) == ["t info m"]
    assert views.log_lines([]) == [] and views.log_lines({}) == []


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("dashboard")
    home = root / "home"
    home.mkdir()
    (home / RANGE_FILE).write_text(str(HOST_ID_BASE))
    server = Server(Settings(home=home, rootfs=root / "rootfs"), API_KEY)
    http = TestClient(server, base_url="http://127.0.0.1", follow_redirects=False)
    try:
        yield http
    finally:
        http.close()
        server.fleet.registry.close()


def _login(client: TestClient) -> str:
    """Log the client in with the key; the CSRF token of its session."""
    response = client.post("/dashboard/login", data={"key": API_KEY, "next": "/dashboard"})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    page = client.get("/dashboard")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def test_pages_ask_for_the_key_first(client: TestClient) -> None:
    client.cookies.clear()
    response = client.get("/dashboard/sandboxes/abc/files?path=/etc")
    assert response.status_code == 303
    assert response.headers["location"] == ("/dashboard/login?next="
                                            "%2Fdashboard%2Fsandboxes%2Fabc%2Ffiles%3Fpath%3D%2Fetc")
    login = client.get(response.headers["location"])
    assert login.status_code == 200 and 'name="key"' in login.text
    assert login.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in login.headers["content-security-policy"]
    assert client.post("/dashboard/sandboxes/abc/kill", data={"csrf": "x"}).status_code == 401


def test_a_wrong_key_is_refused(client: TestClient) -> None:
    client.cookies.clear()
    response = client.post("/dashboard/login", data={"key": "e2b_wrong", "next": "/dashboard"})
    assert response.status_code == 401 and "Invalid API key" in response.text
    assert "set-cookie" not in response.headers


def test_the_key_sets_a_strict_http_only_cookie(client: TestClient) -> None:
    client.cookies.clear()
    response = client.post("/dashboard/login", data={"key": API_KEY, "next": "https://evil.example/"})
    assert response.headers["location"] == "/dashboard"  # never a redirect off the dashboard
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    page = client.get("/dashboard")
    assert page.status_code == 200 and "No sandboxes" in page.text


def test_actions_need_the_session_csrf_token(client: TestClient) -> None:
    client.cookies.clear()
    csrf = _login(client)
    assert client.post("/dashboard/sandboxes/abc/kill", data={"csrf": "forged"}).status_code == 403
    assert client.post("/dashboard/sandboxes/abc/kill", data={}).status_code == 403
    other_site = client.post("/dashboard/sandboxes/abc/kill", data={"csrf": csrf},
                             headers={"origin": "http://evil.example"})
    assert other_site.status_code == 403
    # With the token the action reaches the API, which knows no such sandbox.
    missing = client.post("/dashboard/sandboxes/abc/kill", data={"csrf": csrf})
    assert missing.status_code == 404 and "abc" in missing.text


def test_logging_out_voids_the_cookie(client: TestClient) -> None:
    client.cookies.clear()
    csrf = _login(client)
    cookie = client.cookies.get("e2b_dashboard")
    assert client.post("/dashboard/logout", data={"csrf": csrf}).status_code == 303
    client.cookies.set("e2b_dashboard", cookie or "", path="/dashboard")
    assert client.get("/dashboard").status_code == 303


def test_a_one_time_link_needs_the_key_and_works_once(client: TestClient) -> None:
    client.cookies.clear()
    assert client.post("/dashboard/links").status_code == 401
    made = client.post("/dashboard/links", headers={"X-API-Key": API_KEY})
    assert made.status_code == 201
    path = made.json()["path"]
    assert path.startswith("/dashboard/login?token=")
    first = client.get(path)
    assert first.status_code == 303 and "httponly" in first.headers["set-cookie"].lower()
    assert client.get("/dashboard").status_code == 200
    client.cookies.clear()
    again = client.get(path)
    assert again.status_code == 401 and "already used" in again.text


def test_the_templates_page_shows_the_built_in_ones(client: TestClient) -> None:
    client.cookies.clear()
    page = client.get("/dashboard/templates", headers={"X-API-Key": API_KEY})
    assert page.status_code == 200
    assert 'data-template="base"' in page.text and 'data-template="code-interpreter-v1"' in page.text


def test_the_script_is_served_from_the_server(client: TestClient) -> None:
    script = client.get("/dashboard/static/dashboard.js")
    assert script.status_code == 200 and "data-refresh" in script.text
