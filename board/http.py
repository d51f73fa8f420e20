"""HTTP plumbing shared by the routes: token authentication, role guards, the mapping of service
errors to status codes, and byte-range responses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.response import Stream

from board.auth import Principal, authenticate
from board.dashboard.csrf import check_csrf
from board.errors import BoardError, RangeNotSatisfiable
from board.state import BoardState
from board.storage import parse_range

log = logging.getLogger("board.http")
SESSION_COOKIE = "clipfarm_session"


class TokenAuth(AbstractAuthenticationMiddleware):
    """``Authorization: Bearer <token>``; the dashboard's HttpOnly session cookie carries the same
    token. Unknown or revoked → 401 with a message that says which."""

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
        principal = await authenticate(board.db, token)
        if principal is None:
            raise NotAuthorizedException("unknown or revoked token")
        if via == "cookie":
            check_csrf(connection, token)  # a browser's cookie rides along on forged requests
        roles = connection.route_handler.opt.get("roles")
        if roles is None:
            raise PermissionDeniedException("this route names no role that may use it")
        _check_role(principal, roles)
        return AuthenticationResult(user=principal, auth=via)


def requires(*roles: str) -> dict[str, tuple[str, ...]]:
    """The ``opt`` of a route (or controller) only the given roles may use; admins always may.
    Checked by ``TokenAuth`` right after the token: a Litestar guard copies the route handler
    on every request, which measured more than the check itself."""
    return {"roles": roles}


def _check_role(who: Principal, roles: tuple[str, ...]) -> None:
    if who.role != "admin" and who.role not in roles:
        raise PermissionDeniedException(
            f"a {who.role} token cannot use this route (needs {' or '.join(roles)})"
        )


def board_error_handler(_: Request, exc: BoardError) -> Response:
    return Response({"status_code": exc.status, "detail": exc.message}, status_code=exc.status)


def http_error_handler(request: Request, exc: HTTPException) -> Response:
    body = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)


def internal_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(
        {"status_code": 500, "detail": f"internal error: {type(exc).__name__}"}, status_code=500
    )


def ranged_file(
    board: BoardState,
    key: str,
    size: int,
    range_header: str | None,
    *,
    media_type: str,
    filename: str | None = None,
) -> Response:
    """A file answer honouring a single ``Range`` (206 + Content-Range), else the whole (200)."""
    try:
        wanted = parse_range(range_header, size)
    except ValueError as exc:
        raise RangeNotSatisfiable(f"{exc}; the file has {size} bytes") from None
    headers = {"Accept-Ranges": "bytes"}
    if filename:
        headers["Content-Disposition"] = f'inline; filename="{filename}"'
    if wanted is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = wanted, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    content = board.storage.read_range(key, start, end) if size else _empty()
    return Stream(content=content, status_code=status, headers=headers, media_type=media_type)


async def _empty() -> AsyncIterator[bytes]:
    for chunk in ():
        yield chunk


def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives (never whole in memory)."""

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            if chunk:
                yield chunk

    return chunks()
