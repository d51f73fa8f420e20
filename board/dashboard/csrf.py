"""CSRF protection for requests authenticated by the dashboard's session cookie.

A browser sends the cookie with any request to the board, including one a hostile page makes it
send, so every state-changing request authenticated by the cookie must also prove it came from a
page the board rendered: an ``X-CSRF-Token`` header (or a ``csrf`` form field, checked by the
form's own route) equal to an HMAC of the session id the cookie holds (``board.domain.sessions``;
a page requested with a Bearer token embeds the HMAC of that token). A hostile page can neither
read the HttpOnly cookie nor the token embedded in the board's pages, so it cannot forge it. The
HMAC is keyed by the session id itself, a random secret, so it survives board restarts, is the
same on every board process sharing a database, and dies with the session at sign-out.
Bearer-token clients are not affected: a cross-site page cannot make a browser send an
``Authorization`` header.
"""

from __future__ import annotations

import hashlib
import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException

CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PURPOSE = b"clipfarm dashboard csrf v1"


def csrf_token(session_token: str) -> str:
    """The CSRF token that goes with a session id (or a page's Bearer token): embedded in every
    dashboard page."""
    return hmac.new(session_token.encode(), _PURPOSE, hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, presented: str | None) -> bool:
    """Whether ``presented`` is the CSRF token of ``session_token`` (constant-time)."""
    if not presented or not session_token:
        return False
    return hmac.compare_digest(csrf_token(session_token), presented.strip())


def check_csrf(connection: ASGIConnection, session_token: str) -> None:
    """Refuse (403) a state-changing request authenticated by the session cookie unless it
    carries the session's CSRF token in the ``X-CSRF-Token`` header. Safe methods pass."""
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    if not csrf_matches(session_token, connection.headers.get(CSRF_HEADER)):
        raise PermissionDeniedException(
            "missing or wrong CSRF token: a request authenticated by the dashboard's session "
            "cookie must send the X-CSRF-Token header of a dashboard page (API clients: use "
            "'Authorization: Bearer <token>')"
        )
