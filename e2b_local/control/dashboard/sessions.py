"""Who is logged into the dashboard: browser sessions, one-time login links and CSRF tokens.

Everything lives in memory: a restarted server asks for the key again, and a link printed before the
restart is void, which is what a one-time link should be.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

# How long a browser stays logged in without logging in again.
SESSION_SECONDS = 12 * 3600
# How long a printed one-time link may wait to be opened.
LINK_SECONDS = 600


@dataclass
class Session:
    """One logged-in browser: its cookie value, the token its forms carry, and when it ends."""

    session_id: str
    csrf: str
    expires_at: float


class Sessions:
    """The dashboard's sessions and unused one-time links; `clock` is injectable for the unit tests."""

    def __init__(self, api_key: str, clock: Callable[[], float] = time.time) -> None:
        self.api_key = api_key
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._links: dict[str, float] = {}

    def _prune(self) -> None:
        now = self.clock()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
        self._links = {k: t for k, t in self._links.items() if t > now}

    def key_matches(self, presented: str | None) -> bool:
        """Whether `presented` is the server's API key (compared in constant time)."""
        return presented is not None and secrets.compare_digest(presented.encode(), self.api_key.encode())

    def open(self) -> Session:
        """A new session, for a browser that has just shown the key or a valid link."""
        self._prune()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock() + SESSION_SECONDS)
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value, or None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None or session.expires_at <= self.clock():
            self._sessions.pop(session_id, None)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        """Log a session out."""
        if session_id:
            self._sessions.pop(session_id, None)

    def new_link(self) -> str:
        """A one-time login token, valid for `LINK_SECONDS` or until used."""
        self._prune()
        token = secrets.token_urlsafe(32)
        self._links[token] = self.clock() + LINK_SECONDS
        return token

    def redeem(self, token: str | None) -> Session | None:
        """A new session for an unused, unexpired link token (which is void from now on), else None."""
        if not token:
            return None
        expires_at = self._links.pop(token, None)
        if expires_at is None or expires_at <= self.clock():
            return None
        return self.open()


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Whether a form's token is its session's."""
    return presented is not None and secrets.compare_digest(presented.encode(), session.csrf.encode())


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """Whether a request's Origin header (absent: a same-origin form in older browsers) names this server."""
    if origin is None:
        return True
    return host is not None and origin == f"{scheme}://{host}"
