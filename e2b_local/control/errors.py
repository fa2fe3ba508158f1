"""Error answers in the shape the SDK parses: JSON `{"code": <status>, "message": ..., "error_code"?: ...}`."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An error the control plane answers with `status` and a JSON body.

    `error_code` is E2B's optional semantic code, which some SDK exceptions are chosen by.
    """

    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


def error_response(status: int, message: str, error_code: str | None = None) -> JSONResponse:
    body: dict[str, object] = {"code": status, "message": message}
    if error_code:
        body["error_code"] = error_code
    # Never let the SDK retry our own errors (it retries 429/502/503/504 by default).
    return JSONResponse(body, status_code=status, headers={"Should-Retry": "false"})


def not_found(sandbox_id: str) -> ApiError:
    return ApiError(404, f"sandbox '{sandbox_id}' not found")
