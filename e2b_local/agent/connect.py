"""What the agent's Connect RPC services share: strict request checks, the acting user, error codes.

The Connect library answers a body that does not decode as `unknown` (HTTP 500) and reads a
truncated stream as if it held no message; both are reported here as `invalid_argument` instead.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.codec import Codec, proto_binary_codec, proto_json_codec
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from e2b_local.agent.identity import run_as
from e2b_local.agent.users import Accounts, UnknownUserError, User

M = TypeVar("M")
T = TypeVar("T")
# Each Connect stream message starts with a flag byte and a 4-byte big-endian length.
ENVELOPE_HEAD = 5


class _Strict:
    """A codec that reports any decoding failure as the request's fault (`invalid_argument`)."""

    def __init__(self, inner: Codec) -> None:
        self._inner = inner

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: Any) -> bytes:
        return self._inner.encode(message)

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M:
        try:
            return self._inner.decode(data, message_class)
        except ConnectError:
            raise
        except Exception as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, f"invalid {message_class.__name__} message: {exc}") from None


# Pass as `codecs=` to a generated Connect ASGI application.
CODECS: list[Codec] = [_Strict(proto_binary_codec()), _Strict(proto_json_codec())]  # type: ignore[list-item]


class EnvelopeCheck:
    """Refuses a Connect stream request whose body ends inside a message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] != "http" or not headers.get(b"content-type", b"").startswith(b"application/connect+"):
            await self.app(scope, receive, send)
            return
        head = bytearray()
        remaining = 0  # bytes of the current message still to come

        async def checked() -> Message:
            nonlocal remaining
            message = await receive()
            if message["type"] != "http.request":
                return message
            view = memoryview(message.get("body", b""))
            while view:
                if remaining:
                    step = min(remaining, len(view))
                    remaining -= step
                    view = view[step:]
                    continue
                need = ENVELOPE_HEAD - len(head)
                head.extend(view[:need])
                view = view[need:]
                if len(head) == ENVELOPE_HEAD:
                    remaining = int.from_bytes(head[1:], "big")
                    head.clear()
            if not message.get("more_body", False) and (head or remaining):
                raise ConnectError(Code.INVALID_ARGUMENT,
                                   "protocol error: the request body ends inside a message (truncated envelope)")
            return message

        await self.app(scope, checked, send)


def request_user(accounts: Accounts, ctx: RequestContext) -> User:
    """The acting user of an RPC, from its `Authorization: Basic` header."""
    try:
        return accounts.from_basic_auth(ctx.request_headers.get("authorization"))
    except UnknownUserError as exc:
        raise ConnectError(Code.UNAUTHENTICATED, str(exc)) from None


def os_error_to_rpc(exc: OSError, path: str) -> ConnectError:
    """The Connect error envd would answer for a failed filesystem call on `path`."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return ConnectError(Code.NOT_FOUND, f"file not found: {path}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ConnectError(Code.PERMISSION_DENIED, f"permission denied: {path}")
    if exc.errno == errno.EEXIST:
        return ConnectError(Code.ALREADY_EXISTS, f"already exists: {path}")
    if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG, errno.EINVAL):
        return ConnectError(Code.INVALID_ARGUMENT, f"{path}: {os.strerror(exc.errno)}")
    return ConnectError(Code.INTERNAL, f"{path}: {exc.strerror or exc}")


async def run_checked(user: User, path: str, fn: Callable[..., T], *args: Any) -> T:
    """`run_as(user, fn, *args)`, with a failed filesystem call on `path` answered as envd answers it."""
    try:
        return await run_as(user, fn, *args)
    except OSError as exc:
        raise os_error_to_rpc(exc, path) from None
