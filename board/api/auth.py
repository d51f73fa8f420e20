"""Who is calling, and may they: the token middleware and the role each route asks for.

``Authorization: Bearer <token>`` on every route but the open ones (``/health``, ``/ready``,
``/metrics``, ``/schema``); or the dashboard's HttpOnly session cookie, whose session stands for a
token (``board.domain.sessions``; a request that changes something also needs a CSRF proof:
``board.dashboard.csrf``). Unknown, revoked or signed out → 401; a role the route does not allow
→ 403. The token (or session) is read on every request, so a revoke or a sign-out holds at once
on every board process.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from board.dashboard.csrf import check_csrf
from board.domain.sessions import session_principal
from board.domain.tokens import Principal, authenticate
from board.state import BoardState

SESSION_COOKIE = "clipfarm_session"
OPEN_PATHS = ["^/health$", "^/ready$", "^/metrics$", "^/schema"]


class TokenAuth(AbstractAuthenticationMiddleware):
    """Resolves the caller's token to a ``Principal`` (``request.user``) and checks the route's
    roles (``opt=requires(...)``)."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        via = "bearer"
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise NotAuthorizedException("Authorization header must be 'Bearer <token>'")
            token = token.strip()
        else:
            token = connection.cookies.get(SESSION_COOKIE, "")
            via = "cookie"
            if not token:
                raise NotAuthorizedException(
                    "missing token: send 'Authorization: Bearer <token>' "
                    "(create one with `board token create`)"
                )
        board: BoardState = connection.app.state.board
        if via == "cookie":  # the cookie holds a session id (board.domain.sessions)
            principal = await session_principal(board.db, token)
            if principal is None:
                raise NotAuthorizedException("the session ended or its token was revoked")
            check_csrf(connection, token)  # a browser's cookie rides along on forged requests
        else:
            principal = await authenticate(board.db, token)
            if principal is None:
                raise NotAuthorizedException("unknown or revoked token")
        roles = connection.route_handler.opt.get("roles")
        if roles is None:
            raise PermissionDeniedException("this route names no role that may use it")
        if principal.role != "admin" and principal.role not in roles:
            raise PermissionDeniedException(
                f"a {principal.role} token cannot use this route (needs {' or '.join(roles)})"
            )
        return AuthenticationResult(user=principal, auth=via)


def requires(*roles: str) -> dict[str, tuple[str, ...]]:
    """The ``opt`` of a route (or controller) only the given roles may use; admins always may."""
    return {"roles": roles}


def caller(connection: ASGIConnection) -> Principal:
    """The principal ``TokenAuth`` resolved for this request."""
    return connection.user
