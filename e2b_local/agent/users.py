"""Unix users of the sandbox, selected the way the SDK selects them, and envd's path rules."""

from __future__ import annotations

import base64
import os
import posixpath
import pwd
from dataclasses import dataclass

from e2b_local.agent.state import SandboxState


class UnknownUserError(LookupError):
    """The requested user does not exist in the sandbox."""


@dataclass(frozen=True)
class User:
    """A sandbox account, with the sandbox's default working directory at the time it was looked up."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]
    workdir: str | None = None

    @classmethod
    def lookup(cls, name: str, workdir: str | None = None) -> User:
        """The account called `name`; raises UnknownUserError if there is none."""
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise UnknownUserError(f"user '{name}' does not exist in the sandbox") from None
        groups = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, groups, workdir)

    def resolve(self, path: str | None) -> str:
        """envd's rules: `~` is home, relative paths are relative to home, empty means the workdir."""
        if not path:
            return self.workdir or self.home
        if path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        if not path.startswith("/"):
            path = posixpath.join(self.home, path)
        return posixpath.normpath(path)

    def base_env(self) -> dict[str, str]:
        """PATH, HOME, USER and LOGNAME of this user, as envd sets them."""
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return {"PATH": path, "HOME": self.home, "USER": self.name, "LOGNAME": self.name}


class Accounts:
    """Looks up the acting user of a request, defaulting to the sandbox's default user."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def by_name(self, name: str | None) -> User:
        """The user named in a `username` query parameter, or the default user."""
        return User.lookup(name or self.state.default_user, self.state.default_workdir)

    def default(self) -> User:
        """The sandbox's default user."""
        return self.by_name(None)

    def from_basic_auth(self, header: str | None) -> User:
        """The user named by `Authorization: Basic base64("<name>:")`, or the default user."""
        name = None
        if header and header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip()).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            name = decoded.split(":", 1)[0] or None
        return self.by_name(name)
