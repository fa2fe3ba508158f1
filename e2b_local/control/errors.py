"""Error answers in the shape the SDK parses: JSON `{"code": <status>, "message": ...}`."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An error the control plane answers with `status` and a JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    # Never let the SDK retry our own errors (it retries 429/502/503/504 by default).
    return JSONResponse({"code": status, "message": message}, status_code=status, headers={"Should-Retry": "false"})


def not_found(sandbox_id: str) -> ApiError:
    return ApiError(404, f"sandbox '{sandbox_id}' not found")
