"""Unix users of the sandbox, selected the way the SDK selects them, and envd's path rules."""

from __future__ import annotations

import base64
import os
import posixpath
import pwd
from dataclasses import dataclass

from e2b_local.agent.state import STATE


class UnknownUserError(LookupError):
    """The requested user does not exist in the sandbox."""


@dataclass(frozen=True)
class User:
    """A sandbox account."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]

    @classmethod
    def lookup(cls, name: str) -> User:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise UnknownUserError(f"user '{name}' does not exist in the sandbox") from None
        groups = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, groups)

    def resolve(self, path: str | None) -> str:
        """envd's rules: `~` is home, relative paths are relative to home, empty means the workdir."""
        if not path:
            return STATE.default_workdir or self.home
        if path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        if not path.startswith("/"):
            path = posixpath.join(self.home, path)
        return posixpath.normpath(path)

    def base_env(self) -> dict[str, str]:
        """PATH, HOME, USER and LOGNAME of this user, as envd sets them."""
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return {"PATH": path, "HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def user_from_basic_auth(header: str | None) -> User:
    """The user named by `Authorization: Basic base64("<name>:")`, or the default user."""
    name = STATE.default_user
    if header and header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        if decoded.split(":", 1)[0]:
            name = decoded.split(":", 1)[0]
    return User.lookup(name)


def user_by_name(name: str | None) -> User:
    """The user named in a `username` query parameter, or the default user."""
    return User.lookup(name or STATE.default_user)
