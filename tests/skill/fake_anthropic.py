"""A scripted Anthropic Messages API on 127.0.0.1, speaking the real wire protocol.

Tests point the `anthropic` SDK at it with ANTHROPIC_BASE_URL. It answers `POST /v1/messages` with
the next scripted turn, as one JSON message or, when the request asks for `"stream": true`, as the
server-sent events the real API sends (message_start, ping, content_block_start / delta / stop with
text_delta and input_json_delta, message_delta with the stop reason, message_stop). It checks the
API key (401 with the real error body otherwise): the `x-api-key` header, or the `Authorization:
Bearer` header that anthropic 2.x sends instead and the rules the real API enforces on a
tool-use conversation, and records every request so tests can inspect the tool results sent back.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Size of the pieces streamed text and tool inputs are cut into: small, so that the SDK has to
# put several deltas back together, as it does with the real API.
TEXT_CHUNK = 7
JSON_CHUNK = 11


def text(value: str) -> dict[str, Any]:
    """A text block of a scripted turn."""
    return {"type": "text", "text": value}


def tool_use(name: str, tool_input: dict[str, Any], tool_id: str | None = None) -> dict[str, Any]:
    """A tool_use block of a scripted turn; the id is made up when not given."""
    block = {"type": "tool_use", "name": name, "input": tool_input}
    if tool_id:
        block["id"] = tool_id
    return block


def turn(*content: dict[str, Any], stop_reason: str | None = None) -> dict[str, Any]:
    """One scripted response; the stop reason follows from the content unless given."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    return {"content": list(content), "stop_reason": stop_reason}


@dataclass
class Recorded:
    """One request as the fake received it."""

    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def last_user_content(self) -> list[dict[str, Any]]:
        """The content blocks of the last message, the one answering the previous turn."""
        content = self.body["messages"][-1]["content"]
        return [{"type": "text", "text": content}] if isinstance(content, str) else content

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the last message."""
        return [b for b in self.last_user_content if b["type"] == "tool_result"]


@dataclass
class FakeAnthropic:
    """The scripted API server; use it as a context manager."""

    api_key: str = "sk-ant-fake-key-for-tests"
    turns: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # requests the real API would refuse

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL for ANTHROPIC_BASE_URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *turns: dict[str, Any]) -> None:
        """Set the responses, in order; tool_use blocks without an id get one now."""
        for scripted in turns:
            for block in scripted["content"]:
                if block["type"] == "tool_use":
                    block.setdefault("id", f"toolu_fake{next(self._ids):04d}")
        self.turns = list(turns)

    def __enter__(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- request handling (runs in the server's threads) -------------------------------------------

    def respond(self, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any] | None, Any]:
        """(status, message or None, error body or None) for one request."""
        request_id = f"req_fake{next(self._ids):04d}"
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return 400, None, _error("invalid_request_error", "the body is not JSON", request_id)
        with self._lock:
            self.requests.append(Recorded(headers, body))
            if presented_key(headers) != self.api_key:
                return 401, None, _error("authentication_error", "invalid x-api-key", request_id)
            problem = _check_request(headers, body)
            if problem:
                self.problems.append(problem)
                return 400, None, _error("invalid_request_error", problem, request_id)
            if not self.turns:
                return 400, None, _error("invalid_request_error", "fake: no scripted turn left", request_id)
            scripted = self.turns.pop(0)
        message = {
            "id": f"msg_fake{next(self._ids):04d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": scripted["content"],
            "stop_reason": scripted["stop_reason"],
            "stop_sequence": None,
            "usage": {
                "input_tokens": len(raw) // 4,
                "output_tokens": max(1, len(json.dumps(scripted["content"])) // 4),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "service_tier": "standard",
            },
        }
        return 200, message, None


def presented_key(headers: dict[str, str]) -> str | None:
    """The API key of a request: the `x-api-key` header, or a bearer token (how anthropic 2.x sends it)."""
    bearer = headers.get("authorization", "")
    return headers.get("x-api-key") or (bearer[len("Bearer "):] if bearer.startswith("Bearer ") else None)


def _error(kind: str, message: str, request_id: str) -> dict[str, Any]:
    """The error body of the real API."""
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def _check_request(headers: dict[str, str], body: dict[str, Any]) -> str | None:
    """The first rule of the real Messages API this request breaks, or None."""
    if not headers.get("anthropic-version"):
        return "anthropic-version: header is required"
    for key, kind in (("model", str), ("max_tokens", int), ("messages", list)):
        if not isinstance(body.get(key), kind):
            return f"{key}: field required"
    for tool in body.get("tools") or []:
        if not tool.get("name") or tool.get("input_schema", {}).get("type") != "object":
            return "tools: each tool needs a name and an object input_schema"
    messages = body["messages"]
    if not messages or messages[0]["role"] != "user":
        return "messages: the first message must use the user role"
    pending: set[str] = set()
    for i, msg in enumerate(messages):
        expected_role = "user" if i % 2 == 0 else "assistant"
        if msg["role"] != expected_role:
            return f"messages.{i}: roles must alternate between user and assistant"
        blocks = msg["content"] if isinstance(msg["content"], list) else [text(msg["content"])]
        if msg["role"] == "user":
            answered = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
            leading = [b["type"] == "tool_result" for b in blocks][: len(answered)]
            if pending and (set(answered) != pending or not all(leading)):
                return (f"messages.{i}: tool_use ids were found without tool_result blocks immediately after: "
                        f"{sorted(pending - set(answered))}; tool_result blocks must come first")
            if not pending and answered:
                return f"messages.{i}: unexpected tool_use_id found in tool_result blocks: {answered}"
            pending = set()
        else:
            pending = {b["id"] for b in blocks if b["type"] == "tool_use"}
        for b in blocks:
            if b["type"] == "text" and not b.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
            if b["type"] == "tool_result":
                for part in b.get("content") or []:
                    if part["type"] == "image" and part["source"].get("type") != "base64":
                        return f"messages.{i}: unsupported image source"
    return None


def _sse_events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The events the real API streams for `message`."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": {"type": "text", "text": ""}}
            for i in range(0, len(block["text"]), TEXT_CHUNK):
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "text_delta", "text": block["text"][i:i + TEXT_CHUNK]}}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": {**block, "input": {}}}
            encoded = json.dumps(block["input"])
            pieces = [""] + [encoded[i:i + JSON_CHUNK] for i in range(0, len(encoded), JSON_CHUNK)]
            for piece in pieces:
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "input_json_delta", "partial_json": piece}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                            "usage": {"output_tokens": message["usage"]["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


def _handler_for(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like the real API

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

        def _send_json(self, status: int, payload: Any, request_id: str) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("request-id", request_id)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_stream(self, message: dict[str, Any]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("request-id", message["id"].replace("msg_", "req_"))
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event, data in _sse_events(message):
                chunk = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path.split("?")[0] != "/v1/messages":
                self._send_json(404, _error("not_found_error", f"no route {self.path}", "req_fake"), "req_fake")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, message, error = fake.respond(headers, raw)
            if message is None:
                self._send_json(status, error, error["request_id"])
            elif json.loads(raw).get("stream"):
                self._send_stream(message)
            else:
                self._send_json(200, message, message["id"].replace("msg_", "req_"))

    return Handler
