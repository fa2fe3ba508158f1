"""A tiny stand-in for the E2B API, enough for run_code.py: create, connect, kill, /execute, /files.

It speaks the wire format the real SDK expects (see the protocol reference), answers /execute from a
few scripted behaviours chosen by markers in the code, and records what it was asked, so tests can
check the script's flags, JSON and exit codes offline. It is not a sandbox: nothing is executed.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

# A valid 1x1 PNG, returned as a chart image.
TINY_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()
# How much output the BIG marker produces, to exercise clipping.
BIG_OUTPUT_CHARS = 50_000


@dataclass
class FakeState:
    """What the fake API has seen and holds."""

    sandboxes: dict[str, str] = field(default_factory=dict)  # id -> template
    killed: list[str] = field(default_factory=list)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (sandbox id, path) -> content
    executions: list[dict[str, Any]] = field(default_factory=list)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))


def _sandbox_json(sandbox_id: str, template: str) -> dict[str, Any]:
    return {
        "sandboxID": sandbox_id,
        "templateID": template,
        "clientID": "fake",
        "envdVersion": "0.6.7",
        "envdAccessToken": "fake-token",
    }


def _execute_lines(code: str, env_vars: dict[str, str] | None, count: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = [{"type": "number_of_executions", "execution_count": count}]
    stamp = "2026-01-01T00:00:00Z"
    if env_vars:
        lines.append({"type": "stdout", "text": json.dumps(env_vars) + "\n", "timestamp": stamp})
    if "RAISE" in code:
        lines.append({"type": "stderr", "text": "about to fail\n", "timestamp": stamp})
        lines.append(
            {"type": "error", "name": "ValueError", "value": "bad value", "traceback": "Traceback ...\nValueError"}
        )
    elif "PLOT" in code:
        lines.append({"type": "result", "is_main_result": False, "text": "<Figure>", "png": TINY_PNG})
        lines.append({"type": "result", "is_main_result": True, "text": "'done'"})
    elif "BIG" in code:
        lines.append({"type": "stdout", "text": "x" * BIG_OUTPUT_CHARS, "timestamp": stamp})
    else:
        match = re.fullmatch(r"\s*print\((\d+)\s*\*\s*(\d+)\)\s*", code)
        if match:
            value = int(match.group(1)) * int(match.group(2))
            lines.append({"type": "stdout", "text": f"{value}\n", "timestamp": stamp})
        else:
            lines.append({"type": "result", "is_main_result": True, "text": "ok"})
    lines.append({"type": "end_of_execution"})
    return lines


def _parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    boundary = re.search(r"boundary=\"?([^\";]+)\"?", content_type)
    if not boundary:
        return []
    parts = []
    for chunk in body.split(b"--" + boundary.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.partition(b"\r\n\r\n")
        filename = re.search(rb'filename="([^"]*)"', head)
        if filename:
            parts.append((filename.group(1).decode(), content[:-2] if content.endswith(b"\r\n") else content))
    return parts


def make_handler(state: FakeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: Any = None, raw: bytes | None = None, ctype: str = "application/json"):
            data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, message: str) -> None:
            self._send(404, {"code": 404, "message": message})

        def do_POST(self) -> None:
            url = urlparse(self.path)
            body = self._body()
            if url.path == "/v2/sandboxes":
                request = json.loads(body or b"{}")
                sandbox_id = f"fake{next(state.counter)}"
                state.sandboxes[sandbox_id] = request.get("templateID", "base")
                self._send(201, _sandbox_json(sandbox_id, state.sandboxes[sandbox_id]))
            elif match := re.fullmatch(r"/v2/sandboxes/([^/]+)/connect", url.path):
                sandbox_id = match.group(1)
                if sandbox_id not in state.sandboxes:
                    self._not_found(f"Sandbox {sandbox_id} not found")
                else:
                    self._send(200, _sandbox_json(sandbox_id, state.sandboxes[sandbox_id]))
            elif url.path == "/execute":
                request = json.loads(body)
                request["sandbox_id"] = self.headers.get("E2b-Sandbox-Id")
                state.executions.append(request)
                lines = _execute_lines(request["code"], request.get("env_vars"), len(state.executions))
                self._send(200, raw="".join(json.dumps(line) + "\n" for line in lines).encode(), ctype="")
            elif url.path == "/files":
                sandbox_id = self.headers.get("E2b-Sandbox-Id", "")
                written = []
                for path, content in _parse_multipart(body, self.headers.get("Content-Type", "")):
                    state.files[(sandbox_id, path)] = content
                    written.append({"path": path, "name": path.rsplit("/", 1)[-1], "type": "file"})
                self._send(200, written)
            else:
                self._not_found(f"no route {url.path}")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/files":
                path = parse_qs(url.query).get("path", [""])[0]
                content = state.files.get((self.headers.get("E2b-Sandbox-Id", ""), path))
                if content is None:
                    self._not_found(f"path '{path}' does not exist")
                else:
                    self._send(200, raw=content, ctype="application/octet-stream")
            else:
                self._not_found(f"no route {url.path}")

        def do_DELETE(self) -> None:
            match = re.fullmatch(r"/sandboxes/([^/]+)", urlparse(self.path).path)
            if match and match.group(1) in state.sandboxes:
                del state.sandboxes[match.group(1)]
                state.killed.append(match.group(1))
                self._send(204)
            else:
                self._not_found("sandbox not found")

    return Handler


class FakeE2BApi:
    """Run the fake API on a free loopback port in a background thread."""

    def __init__(self) -> None:
        self.state = FakeState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeE2BApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
