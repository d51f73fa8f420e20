"""Signing in and out of the dashboard, and what a browser without a session is told.

Signing in with a token opens a session held by the board (``board.domain.sessions``); its
random id, never the token, goes in an HttpOnly, SameSite=Strict cookie (``clipfarm_session``)
that the board's TokenAuth accepts in place of a Bearer header. Signing out ends the session on
the board, so a copy of the cookie is worthless afterwards; revoking the token ends its sessions.
The cookie is ``Secure`` when the request came over https, and always with
``BOARD_SECURE_COOKIES=1``: behind a proxy that terminates TLS the board itself sees plain http.
Admins and submitters may sign in; farmhand tokens may not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import quote, urlsplit

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from board.api.auth import SESSION_COOKIE
from board.dashboard.csrf import CSRF_FIELD, CSRF_HEADER, csrf_matches, csrf_token
from board.dashboard.render import html_page, render
from board.domain.sessions import end_session, open_session, session_principal
from board.domain.tokens import Principal, authenticate
from board.state import BoardState

SESSION_MAX_AGE_S = 30 * 24 * 3600  # an operator's laptop stays signed in for a month
PUBLIC = {"exclude_from_auth": True}
DASHBOARD_ROLES = ("admin", "submitter")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path on this board, never another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\\"):
        return "/"
    if parts.path in ("/signin", "/signout"):
        return "/"
    return target


def session_token(request: Request) -> str:
    """What authenticated this request: a Bearer header's token, or the cookie's session id.
    The CSRF token of the request's pages is bound to it (``board.dashboard.csrf``)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(SESSION_COOKIE, "")


def principal_check(
    board: BoardState, request: Request
) -> Callable[[], Awaitable[Principal | None]]:
    """How a long answer (the dashboard's live stream) asks again who its caller is now: the
    cookie's session or the Bearer token, whichever authenticated the request. None: signed
    out, expired or revoked."""
    credential = session_token(request)
    if request.auth == "cookie":
        return lambda: session_principal(board.db, credential)
    return lambda: authenticate(board.db, credential)


def _secure(request: Request, board: BoardState) -> bool:
    return board.config.secure_cookies or request.url.scheme == "https"


def _cross_site(request: Request) -> bool:
    """A form posted from another site (login CSRF). Browsers say where a request came from in
    ``Sec-Fetch-Site``; older ones send ``Origin``, compared with the host the request reached
    (behind a proxy that rewrites Host, ``Sec-Fetch-Site`` is what decides)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False  # not a browser, or one that sends neither: nothing to protect
    if origin == "null":
        return True  # a sandboxed frame or a data: page
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return urlsplit(origin).netloc != host


async def _signed_in(request: Request, board: BoardState) -> Principal | None:
    session_id = request.cookies.get(SESSION_COOKIE, "")
    who = await session_principal(board.db, session_id) if session_id else None
    return who if who is not None and who.role in DASHBOARD_ROLES else None


def _signin_page(next_url: str, error: str = "", status_code: int = 200) -> Response:
    return html_page(render("signin.html", next_url=next_url, error=error), status_code=status_code)


@get("/signin", opt=PUBLIC, include_in_schema=False)
async def signin_page(request: Request, board: BoardState, next: str | None = None) -> Response:
    target = safe_next(next)
    if await _signed_in(request, board) is not None:
        return Redirect(target, status_code=303)
    return _signin_page(target)


@post("/signin", opt=PUBLIC, include_in_schema=False, request_max_body_size=16 * 1024)
async def signin(
    request: Request,
    board: BoardState,
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response:
    target = safe_next(data.get("next"))
    if _cross_site(request):
        return _signin_page(target, "Sign-in from another site was refused.", 403)
    token = (data.get("token") or "").strip()
    who = await authenticate(board.db, token) if token else None
    if who is None:
        return _signin_page(target, "That token is unknown or was revoked.", 401)
    if who.role not in DASHBOARD_ROLES:
        return _signin_page(
            target,
            f"A {who.role} token cannot sign in to the dashboard; use an admin or submitter token.",
            403,
        )
    cookie = Cookie(
        key=SESSION_COOKIE,
        value=await open_session(board.db, who, SESSION_MAX_AGE_S),
        path="/",
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=_secure(request, board),
    )
    return Redirect(target, status_code=303, cookies=[cookie])


@post("/signout", opt=PUBLIC, include_in_schema=False, request_max_body_size=16 * 1024)
async def signout(request: Request, board: BoardState) -> Response:
    session_id = request.cookies.get(SESSION_COOKIE, "")
    if session_id:
        form = await request.form()
        presented = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not csrf_matches(session_id, presented):
            return html_page(
                render("error.html", who=None, path="", title="Not signed out", status=403,
                       message="The sign-out form was not one of this board's pages."),
                status_code=403,
            )  # fmt: skip
        await end_session(board.db, session_id)  # a copy of the cookie is worthless from now
    gone = Cookie(key=SESSION_COOKIE, value="", path="/", max_age=0, httponly=True,
                  samesite="strict", secure=_secure(request, board))  # fmt: skip
    return Redirect("/signin", status_code=303, cookies=[gone])


def to_signin(request: Request, _: Exception) -> Response:
    """A page asked for without a (valid) session: off to the sign-in page, coming back after.

    A SameSite=Strict cookie is not sent when the operator follows a link from another site
    (chat, e-mail) to a dashboard page; one same-site hop fetches the page again with it."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.headers.get("sec-fetch-site") == "cross-site":
        return html_page(render("bounce.html", target=here))
    return Redirect(f"/signin?next={quote(safe_next(here), safe='/')}", status_code=303)


def error_page(request: Request, exc: Exception) -> Response:
    """Errors on a page answer as a page, not JSON (the API's answer shape)."""
    status = getattr(exc, "status", None) or getattr(exc, "status_code", 500)
    message = getattr(exc, "message", None) or getattr(exc, "detail", "") or "Something went wrong."
    title = {403: "Not allowed", 404: "Not found"}.get(status, "Error")
    who = request.scope.get("user")
    csrf = csrf_token(session_token(request)) if who is not None else ""
    return html_page(
        render("error.html", who=who, csrf=csrf, path=request.url.path, title=title,
               status=status, message=message),
        status_code=status,
    )  # fmt: skip


SESSION_ROUTES = [signin_page, signin, signout]
