"""Error answers in the shape the SDK parses: JSON `{"code": <status>, "message": ..., "error_code"?: ...}`."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("e2b_local")


class ApiError(Exception):
    """An error the control plane answers with `status` and a JSON body.

    `error_code` is E2B's optional semantic code, which some SDK exceptions are chosen by.
    """

    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON answer; also an ASGI app, for answering from raw ASGI code (`await response(scope, receive, send)`)."""
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(status: int, message: str, error_code: str | None = None, final: bool = True) -> JSONResponse:
    """The SDK's error shape; `final` tells the SDK not to retry (the proxy's own errors leave that to it)."""
    body: dict[str, object] = {"code": status, "message": message}
    if error_code:
        body["error_code"] = error_code
    # Never let the SDK retry our own errors (it retries 429/502/503/504 by default).
    return json_response(status, body, {"Should-Retry": "false"} if final else None)


def not_found(sandbox_id: str) -> ApiError:
    return ApiError(404, f"sandbox '{sandbox_id}' not found")


# How the disk being full shows: errno, SQLite's result code, or the text of a helper's stderr.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXTS = ("database or disk is full", "No space left on device", "Disk quota exceeded")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, says that a disk is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if any(text in str(exc) for text in DISK_FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def storage_full(data_dir: Path, exc: BaseException) -> ApiError:
    """The answer to an operation refused because the data directory's disk is full (507)."""
    return ApiError(507, f"no space left in the data directory {data_dir} ({exc}); "
                         "the operation was not carried out: free space there and retry")


def as_api_error(exc: Exception, data_dir: Path) -> ApiError:
    """The answer for any exception: its own status, 507 for a full disk, else 500."""
    if isinstance(exc, ApiError):
        return exc
    if is_disk_full(exc):
        return storage_full(data_dir, exc)
    return ApiError(500, f"internal error: {exc}")


class CatchAll:
    """ASGI middleware: answers any exception a route lets through, and keeps the connection open.

    Starlette's own last-resort handler re-raises after answering, and the HTTP server then closes
    the connection, so the client's next request on it would fail. Errors are logged with their
    traceback; a full data directory is answered with 507 and a message naming it.
    """

    def __init__(self, app: ASGIApp, data_dir: Path) -> None:
        self.app = app
        self.data_dir = data_dir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise  # the answer is on its way already: nothing to replace it with
            error = as_api_error(exc, self.data_dir)
            if error.status == 507:
                log.error("%s %s: the data directory is full", scope["method"], scope["path"], exc_info=exc)
            else:
                log.error("unexpected error on %s %s", scope["method"], scope["path"], exc_info=exc)
            await error_response(error.status, error.message, error.error_code)(scope, receive, send)
