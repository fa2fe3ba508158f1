"""Jupyter iopub messages translated into the NDJSON lines of E2B's `/execute` (protocol notes 5.2).

| Jupyter message            | line                                                              |
|----------------------------|-------------------------------------------------------------------|
| execute_input              | `number_of_executions` with the execution count                   |
| stream                     | `stdout` / `stderr` with the text and the message's timestamp     |
| execute_result             | `result`, `is_main_result: true`, one key per known MIME type     |
| display_data               | `result`, `is_main_result: false`                                 |
| error                      | `error` with name, value and the traceback joined into one string |
| status idle                | the end of the execution                                          |
"""

from __future__ import annotations

import datetime
import json
from typing import Any

# MIME type -> the key E2B's result lines use for it; everything else goes to `extra`.
MIME_KEYS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}
# The lines that close every response.
END_OF_EXECUTION = {"type": "end_of_execution"}
KEEPALIVE = {"type": "keepalive"}


def timestamp(header: dict[str, Any]) -> str:
    """The message's creation time in Jupyter's wire format (jupyter_client parses it into a datetime)."""
    date = header.get("date")
    if isinstance(date, datetime.datetime):
        if date.tzinfo is not None:
            date = date.astimezone(datetime.UTC).replace(tzinfo=None)
        return date.isoformat(timespec="microseconds") + "Z"
    return str(date or datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"))


def result_line(data: dict[str, Any], is_main_result: bool, quote: str) -> dict[str, Any]:
    """A `result` line from a MIME bundle."""
    line: dict[str, Any] = {"type": "result"}
    extra: dict[str, Any] = {}
    for mime, value in data.items():
        key = MIME_KEYS.get(mime)
        if key is None:
            extra[mime] = value
        else:
            line[key] = value
    text = line.get("text")
    # E2B shows a string result without the quotes of its repr ('abc' -> abc).
    if isinstance(text, str) and len(text) >= 2 and text[0] == quote and text[-1] == quote:
        line["text"] = text[1:-1]
    line["is_main_result"] = is_main_result
    line["extra"] = extra
    return line


class Translator:
    """Turns the messages of one execution into lines; remembers what E2B's server remembers."""

    def __init__(self, quote: str = "'") -> None:
        self.quote = quote
        self.errored = False
        self.finished = False

    def line(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """The line for one message, or None when the message produces none."""
        kind = msg["msg_type"]
        content = msg["content"]
        if kind == "stream":
            name = content.get("name")
            if name in ("stdout", "stderr"):
                return {"type": name, "text": content.get("text", ""), "timestamp": timestamp(msg["header"])}
            return None
        if kind == "execute_result":
            return result_line(content.get("data", {}), True, self.quote)
        if kind == "display_data":
            return result_line(content.get("data", {}), False, self.quote)
        if kind == "error":
            # Like E2B's server, only the first error of an execution counts.
            if self.errored:
                return None
            self.errored = True
            return error_line(content.get("ename", ""), content.get("evalue", ""),
                              "".join(content.get("traceback") or []))
        if kind == "execute_input":
            return {"type": "number_of_executions", "execution_count": content.get("execution_count")}
        if kind == "status" and content.get("execution_state") == "idle":
            self.finished = True
        return None


def error_line(name: str, value: str, traceback: str = "") -> dict[str, Any]:
    """An `error` line."""
    return {"type": "error", "name": name, "value": value, "traceback": traceback}


def encode(lines: list[dict[str, Any]]) -> bytes:
    """NDJSON: one compact JSON object per line, each ending in a newline, no blank lines."""
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
