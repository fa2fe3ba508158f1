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
# The last line of every response.
END_OF_EXECUTION = {"type": "end_of_execution"}
# Written after a long silence (the SDK skips it).
KEEPALIVE = {"type": "keepalive"}


def timestamp(header: dict[str, Any]) -> str:
    """The message's creation time as the kernel wrote it (ISO 8601), or now when it wrote none."""
    date = header.get("date")
    if isinstance(date, str) and date:
        return date
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


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
    """Turns the messages of one execution into lines; remembers what E2B's server remembers.

    `msg_id` is the user's request. When a fence follows it (see `Language.fence`), messages of the
    fence request are late output of the user's code, up to the fence's token.
    """

    def __init__(self, msg_id: str, quote: str = "'") -> None:
        self.msg_id = msg_id
        self.quote = quote
        self.errored = False
        self.idle = False
        self.fence_token: str | None = None
        self.fence_idle = False
        self.fence_seen = False

    @property
    def finished(self) -> bool:
        """True once the kernel is idle again and, with a fence, all output has arrived."""
        return self.idle and (self.fence_token is None or self.fence_seen)

    def line(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """The line for one message, or None when the message produces none."""
        kind = msg["msg_type"]
        content = msg["content"]
        if msg["parent_header"].get("msg_id") != self.msg_id:
            return self._fence_line(msg)
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
            self.idle = True
        return None

    def _fence_line(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        # Deno labels output with the latest request when it sends it, not when the code produced it:
        # outputs labelled with the fence are the user's code's, except the fence's own token.
        kind = msg["msg_type"]
        content = msg["content"]
        if self.fence_token is None:
            return None
        if kind == "status" and content.get("execution_state") == "idle":
            self.fence_idle = True
        if kind in ("execute_result", "display_data", "error"):
            return self.line({**msg, "parent_header": {"msg_id": self.msg_id}})
        if kind != "stream":
            return None
        text = content.get("text", "")
        if self.fence_token in text:
            self.fence_seen = True
            text = text.replace(self.fence_token + "\n", "").replace(self.fence_token, "")
        if not text or content.get("name") not in ("stdout", "stderr"):
            return None
        return {"type": content["name"], "text": text, "timestamp": timestamp(msg["header"])}


def error_line(name: str, value: str, traceback: str = "") -> dict[str, Any]:
    """An `error` line."""
    return {"type": "error", "name": name, "value": value, "traceback": traceback}


def encode(lines: list[dict[str, Any]]) -> bytes:
    """NDJSON: one compact JSON object per line, each ending in a newline, no blank lines."""
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
