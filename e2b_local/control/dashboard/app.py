"""The dashboard's routes: pages rendered on the server from the control-plane API, called in-process.

Every page and action goes through the same API the SDK calls (with the server's key, inside this
process), and a sandbox's processes and files through its agent as the SDK reaches them, so the
dashboard sees exactly what a client sees and never a host path. A browser logs in with the API key or
a one-time link and then holds an HttpOnly, SameSite=Strict cookie; every action is a POST carrying the
session's CSRF token.
"""

from __future__ import annotations

import base64
import contextlib
import json
import posixpath
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

import e2b_local.control.dashboard.views as views
from e2b_local.control.dashboard.sessions import Session, Sessions, csrf_ok, same_origin
from e2b_local.protocol import ENVD_PORT

PREFIX = "/dashboard"
COOKIE = "e2b_dashboard"
HERE = Path(__file__).parent
# The sandbox user the SDK acts as by default, as its Basic credential spells it.
DEFAULT_USER = "user"
# What "extend" adds to a sandbox's time left.
EXTEND_SECONDS = 300
# What "resume" grants a paused sandbox.
RESUME_SECONDS = 300
# The server-log lines shown for a sandbox while no logs API answers, and how much of the log is read.
LOG_LINES = 200
LOG_TAIL_BYTES = 2 * 1024 * 1024
# Answered on every page (with Referrer-Policy "no-referrer" Chromium would send "Origin: null" on our forms).
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
# The notices an action redirects with (a fixed set: nothing from the request is shown back).
NOTICES = {"killed": "Sandbox killed.", "paused": "Sandbox paused.", "resumed": "Sandbox resumed.",
           "extended": f"Time left extended by {EXTEND_SECONDS // 60} minutes."}


def is_dashboard_path(path: str) -> bool:
    """Whether a request path belongs to the dashboard (which checks its own credentials)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


class Backend:
    """The server's own API and sandbox proxy, called in-process with the API key."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e2b-local",
                                      headers={"X-API-Key": api_key}, timeout=60.0)

    async def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A control-plane request."""
        return await self.http.request(method, path, **kwargs)

    def _agent_headers(self, sandbox_id: str) -> dict[str, str]:
        basic = base64.b64encode(f"{DEFAULT_USER}:".encode()).decode()
        return {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT), "Authorization": f"Basic {basic}"}

    async def agent(self, sandbox_id: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the sandbox's agent through the router, as the SDK sends it."""
        return await self.http.request(method, path, headers=self._agent_headers(sandbox_id), **kwargs)

    async def rpc(self, sandbox_id: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """A unary Connect call in its JSON encoding; a failure raises `AgentError` with the agent's message."""
        headers = {**self._agent_headers(sandbox_id), "Content-Type": "application/json",
                   "Connect-Protocol-Version": "1"}
        response = await self.http.post(f"/{method}", headers=headers, content=json.dumps(body))
        data = _json(response)
        if response.status_code != 200:
            raise AgentError(str(data.get("message") or response.text or response.status_code))
        return data


class AgentError(Exception):
    """The sandbox's agent (or the router before it) refused a call; the text says why."""


def _json(response: httpx.Response) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        data = response.json()
        if isinstance(data, dict):
            return data
    return {}


def _message(response: httpx.Response) -> str:
    return str(_json(response).get("message") or response.text.strip() or response.reason_phrase)


class Dashboard:
    """The dashboard's state (sessions, the in-process backend) and its route handlers."""

    def __init__(self, app: ASGIApp, api_key: str, log_file: Path) -> None:
        self.sessions = Sessions(api_key)
        self.backend = Backend(app, api_key)
        self.log_file = log_file
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    # -- credentials ---------------------------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def by_key(self, request: Request) -> bool:
        """A script's request carrying the key itself: no cookie, so no CSRF to guard against."""
        return self.sessions.key_matches(request.headers.get("x-api-key"))

    def _login_redirect(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?" + urlencode({"next": target}), status_code=303)

    def _with_cookie(self, request: Request, response: Response, session: Session) -> Response:
        response.set_cookie(COOKIE, session.session_id, max_age=int(session.expires_at - time.time()),
                            path=PREFIX, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    def render(self, request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        session = self.session(request)
        response = self.templates.TemplateResponse(
            request, name, {"prefix": PREFIX, "csrf": session.csrf if session else "", "logged_in": session is not None,
                            **context}, status_code=status_code)
        return response

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "error.html", {"status": status, "message": message}, status_code=status)

    async def _authorized(self, request: Request) -> Response | None:
        """None when the request may proceed; else the login redirect (pages) or a refusal (actions)."""
        session = self.session(request)
        if request.method in ("GET", "HEAD"):
            if session is None and not self.by_key(request):
                return self._login_redirect(request)
            return None
        if self.by_key(request):
            return None
        if session is None:
            return self.error(request, 401, "Log in with the API key first.")
        form = await request.form()
        token = form.get("csrf")
        origin_ok = same_origin(request.headers.get("origin"), request.headers.get("host"), request.url.scheme)
        if not origin_ok or not csrf_ok(session, token if isinstance(token, str) else None):
            return self.error(request, 403, "The form is out of date or came from another site: reload the page.")
        return None

    # -- login ---------------------------------------------------------------------------------------
    @staticmethod
    def _next(value: Any) -> str:
        # Only somewhere on the dashboard: a login never redirects off the site.
        if isinstance(value, str) and is_dashboard_path(value.split("?", 1)[0]) and "//" not in value:
            return value
        return PREFIX

    async def login_page(self, request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None:
            session = self.sessions.redeem(token)
            if session is None:
                return self.render(request, "login.html", {"failure": "This login link was already used or has "
                                                           "expired: run `e2b-local dashboard` again, or enter the "
                                                           "API key.", "next": PREFIX}, status_code=401)
            return self._with_cookie(request, RedirectResponse(PREFIX, status_code=303), session)
        target = self._next(request.query_params.get("next"))
        return self.render(request, "login.html", {"failure": None, "next": target})

    async def login(self, request: Request) -> Response:
        form = await request.form()
        key = form.get("key")
        target = self._next(form.get("next"))
        if not same_origin(request.headers.get("origin"), request.headers.get("host"), request.url.scheme):
            return self.error(request, 403, "The login form came from another site.")
        if not self.sessions.key_matches(key.strip() if isinstance(key, str) else None):
            return self.render(request, "login.html", {"failure": "Invalid API key", "next": target}, status_code=401)
        return self._with_cookie(request, RedirectResponse(target, status_code=303), self.sessions.open())

    async def logout(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        self.sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    async def new_link(self, request: Request) -> Response:
        """A one-time login link for `e2b-local dashboard`: only for a caller that holds the key."""
        if not self.by_key(request):
            return JSONResponse({"code": 401, "message": "Invalid API key"}, status_code=401)
        token = self.sessions.new_link()
        return JSONResponse({"path": f"{PREFIX}/login?token={token}"}, status_code=201)

    # -- pages ---------------------------------------------------------------------------------------
    async def sandboxes(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        response = await self.backend.api("GET", "/v2/sandboxes", params={"state": "running,paused", "limit": 100})
        if response.status_code != 200:
            return self.error(request, response.status_code, _message(response))
        now = time.time()
        rows = [views.sandbox_row(s, now) for s in response.json()]
        return self.render(request, "sandboxes.html", {"rows": rows, "notice": NOTICES.get(
            request.query_params.get("notice", ""))})

    async def _detail(self, request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        sandbox_id = request.path_params["sandbox_id"]
        response = await self.backend.api("GET", f"/sandboxes/{quote(sandbox_id, safe='')}")
        if response.status_code != 200:
            return None, self.error(request, response.status_code, _message(response))
        return response.json(), None

    async def sandbox(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        detail, failure = await self._detail(request)
        if failure is not None:
            return failure
        assert detail is not None
        sandbox_id = detail["sandboxID"]
        processes: list[dict[str, Any]] = []
        process_error = None
        if detail.get("state") == "running":
            try:
                listed = await self.backend.rpc(sandbox_id, "process.Process/List", {})
                processes = [_process(p) for p in listed.get("processes", [])]
            except AgentError as exc:
                process_error = str(exc)
        else:
            process_error = "The sandbox is paused: resume it to see its processes."
        return self.render(request, "sandbox.html", {
            "sandbox": views.sandbox_row(detail, time.time()), "detail": detail,
            "chart": await self._chart(sandbox_id), "logs": await self._logs(sandbox_id),
            "processes": processes, "process_error": process_error,
            "notice": NOTICES.get(request.query_params.get("notice", "")),
        })

    async def _chart(self, sandbox_id: str) -> views.Chart:
        response = await self.backend.api("GET", f"/sandboxes/{quote(sandbox_id, safe='')}/metrics")
        samples = response.json() if response.status_code == 200 else []
        return views.chart(samples if isinstance(samples, list) else [])

    async def _logs(self, sandbox_id: str) -> list[str]:
        # The logs API when the server has one; until then, what the server logged about the sandbox.
        response = await self.backend.api("GET", f"/sandboxes/{quote(sandbox_id, safe='')}/logs")
        if response.status_code == 200:
            return views.log_lines(_json(response))[-LOG_LINES:]
        return self._server_lines(sandbox_id)

    def _server_lines(self, needle: str) -> list[str]:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(0, 2)
                start = max(0, f.tell() - LOG_TAIL_BYTES)
                f.seek(start)
                data = f.read()
        except OSError:
            return []
        lines = data.decode(errors="replace").splitlines()
        if start:
            lines = lines[1:]  # the first is probably cut
        return [line for line in lines if needle in line][-LOG_LINES:]

    async def chart_fragment(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        return self.render(request, "_chart.html", {"chart": await self._chart(request.path_params["sandbox_id"])})

    async def logs_fragment(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        return self.render(request, "_logs.html", {"logs": await self._logs(request.path_params["sandbox_id"])})

    async def files(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        sandbox_id = request.path_params["sandbox_id"]
        path = posixpath.normpath("/" + request.query_params.get("path", f"/home/{DEFAULT_USER}").lstrip("/"))
        entries: list[dict[str, Any]] = []
        failure = None
        try:
            listed = await self.backend.rpc(sandbox_id, "filesystem.Filesystem/ListDir", {"path": path, "depth": 1})
            entries = sorted((_entry(e) for e in listed.get("entries", [])),
                             key=lambda e: (not e["is_dir"], e["name"]))
        except AgentError as exc:
            failure = exc.args[0]
        return self.render(request, "files.html", {
            "sandbox_id": sandbox_id, "path": path, "parent": views.parent(path), "entries": entries,
            "crumbs": views.breadcrumbs(path), "failure": failure,
        }, status_code=200 if failure is None else 404)

    async def download(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        sandbox_id = request.path_params["sandbox_id"]
        path = request.query_params.get("path", "")
        response = await self.backend.agent(sandbox_id, "GET", "/files",
                                            params={"path": path, "username": DEFAULT_USER})
        if response.status_code != 200:
            return self.error(request, response.status_code, _message(response))
        name = posixpath.basename(path.rstrip("/")) or "download"
        return Response(response.content, media_type="application/octet-stream", headers={
            "content-disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}"})

    async def templates_page(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        listed = await self.backend.api("GET", "/templates")
        templates: list[dict[str, Any]] = []
        if listed.status_code == 200 and isinstance(listed.json(), list):
            templates = [_template(t) for t in listed.json() if isinstance(t, dict)]
        if not templates:
            health = _json(await self.backend.api("GET", "/health"))
            templates = [{"id": name, "aliases": [name], "status": "built in", "build": None, "cpu": None,
                          "memory": None, "created": None} for name in health.get("templates", [])]
        return self.render(request, "templates.html", {"templates": templates})

    async def build_logs(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        template_id = quote(request.path_params["template_id"], safe="")
        build_id = quote(request.path_params["build_id"], safe="")
        response = await self.backend.api("GET", f"/templates/{template_id}/builds/{build_id}/status")
        if response.status_code != 200:
            return self.error(request, response.status_code, _message(response))
        body = _json(response)
        return self.render(request, "build.html", {"template_id": request.path_params["template_id"],
                                                   "build_id": request.path_params["build_id"],
                                                   "status": body.get("status", ""), "logs": views.log_lines(body)})

    # -- actions -------------------------------------------------------------------------------------
    async def action(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        sandbox_id = request.path_params["sandbox_id"]
        base = f"/sandboxes/{quote(sandbox_id, safe='')}"
        verb = request.path_params["action"]
        if verb == "kill":
            response = await self.backend.api("DELETE", base)
        elif verb == "pause":
            response = await self.backend.api("POST", base + "/pause", json={})
        elif verb == "resume":
            response = await self.backend.api("POST", base + "/connect", json={"timeout": RESUME_SECONDS})
        elif verb == "extend":
            detail, failure = await self._detail(request)
            if failure is not None:
                return failure
            assert detail is not None
            end = views.parse_time(detail.get("endAt")) or time.time()
            left = max(0, int(end - time.time()))
            response = await self.backend.api("POST", base + "/timeout", json={"timeout": left + EXTEND_SECONDS})
        else:
            return self.error(request, 404, f"No such action: {verb}")
        if response.status_code not in (200, 201, 204):
            return self.error(request, response.status_code, _message(response))
        notice = {"kill": "killed", "pause": "paused", "resume": "resumed", "extend": "extended"}[verb]
        target = PREFIX if verb == "kill" else f"{PREFIX}/sandboxes/{quote(sandbox_id, safe='')}"
        return RedirectResponse(f"{target}?notice={notice}", status_code=303)


def _process(process: dict[str, Any]) -> dict[str, Any]:
    config = process.get("config") or {}
    return {"pid": process.get("pid", ""), "tag": process.get("tag", ""),
            "command": " ".join([config.get("cmd", ""), *config.get("args", [])]).strip(),
            "cwd": config.get("cwd", "")}


def _entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {"name": entry.get("name", ""), "path": entry.get("path", ""),
            "is_dir": entry.get("type") == "FILE_TYPE_DIRECTORY", "size": views.size(entry.get("size", 0)),
            "permissions": entry.get("permissions", ""), "owner": entry.get("owner", ""),
            "modified": entry.get("modifiedTime", ""), "symlink": entry.get("symlinkTarget")}


def _template(template: dict[str, Any]) -> dict[str, Any]:
    return {"id": template.get("templateID", ""), "aliases": template.get("aliases") or [],
            "status": template.get("buildStatus", ""), "build": template.get("buildID"),
            "cpu": template.get("cpuCount"), "memory": template.get("memoryMB"), "created": template.get("createdAt")}


class _Secured:
    """Adds the dashboard's security headers to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present)]
            await send(message)

        await self.app(scope, receive, sending)


def build(server: ASGIApp, api_key: str, log_file: Path) -> ASGIApp:
    """The dashboard application, under `PREFIX`, calling `server` (the whole e2b-local app) in-process."""
    dashboard = Dashboard(server, api_key, log_file)
    sid = PREFIX + "/sandboxes/{sandbox_id}"
    app = Starlette(routes=[
        Route(PREFIX, dashboard.sandboxes, methods=["GET"]),
        Route(PREFIX + "/", dashboard.sandboxes, methods=["GET"]),
        Route(PREFIX + "/login", dashboard.login_page, methods=["GET"]),
        Route(PREFIX + "/login", dashboard.login, methods=["POST"]),
        Route(PREFIX + "/logout", dashboard.logout, methods=["POST"]),
        Route(PREFIX + "/links", dashboard.new_link, methods=["POST"]),
        Route(PREFIX + "/templates", dashboard.templates_page, methods=["GET"]),
        Route(PREFIX + "/templates/{template_id}/builds/{build_id}", dashboard.build_logs, methods=["GET"]),
        Route(sid, dashboard.sandbox, methods=["GET"]),
        Route(sid + "/chart", dashboard.chart_fragment, methods=["GET"]),
        Route(sid + "/logs", dashboard.logs_fragment, methods=["GET"]),
        Route(sid + "/files", dashboard.files, methods=["GET"]),
        Route(sid + "/download", dashboard.download, methods=["GET"]),
        Route(sid + "/{action}", dashboard.action, methods=["POST"]),
        Mount(PREFIX + "/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ])
    app.state.dashboard = dashboard
    return _Secured(app)
