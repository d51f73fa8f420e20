"""Dashboard sessions held by the board (issue 21, hole 6): the cookie is a session id, not the
token; signing out ends the session on the board, so a copy of the cookie is worthless; revoking
the token ends its sessions; behind TLS (``BOARD_SECURE_COOKIES=1``) the cookie is Secure even
though the board itself sees plain http."""

from __future__ import annotations

import httpx

from tests.board.conftest import board_with
from tests.dashboard.web import csrf_of, signed_in
from tests.harness import RunningBoard

COOKIE = "clipfarm_session"


def replay(board: RunningBoard, session: str) -> httpx.Client:
    """A client that never signed in, holding a copy of someone's session cookie."""
    return httpx.Client(base_url=board.url, cookies={COOKIE: session}, timeout=30)


def test_a_copy_of_the_cookie_is_worthless_after_sign_out(shared_board):
    token = shared_board.token("submitter")
    with signed_in(shared_board, token) as browser:
        session = browser.cookies.get(COOKIE)
        assert session != token
        with replay(shared_board, session) as thief:
            assert thief.get("/api/v1/jobs").status_code == 200  # a live session: works
        r = browser.post("/signout", data={"csrf": csrf_of(browser.get("/").text)})
        assert r.status_code == 303
    with replay(shared_board, session) as thief:
        r = thief.get("/api/v1/jobs")
        assert r.status_code == 401, r.text
        assert r.json()["detail"] == "the session ended or its token was revoked"
        assert thief.get("/").status_code == 303  # off to the sign-in page
        assert thief.get("/dashboard/events").status_code == 401
    with shared_board.client(token) as api:  # the token itself is untouched by a sign-out
        assert api.get("/api/v1/jobs").status_code == 200


def test_revoking_the_token_ends_its_sessions(shared_board):
    name = "revoked-while-signed-in"
    token = shared_board.token("submitter", name)
    with signed_in(shared_board, token) as browser, signed_in(shared_board, token) as laptop:
        assert browser.get("/").status_code == 200 and laptop.get("/").status_code == 200
        with shared_board.admin() as admin:
            assert admin.delete(f"/api/v1/tokens/{name}").status_code in (200, 204)
        assert browser.get("/api/v1/jobs").status_code == 401
        assert laptop.get("/").status_code == 303


def test_each_sign_in_is_a_session_of_its_own(shared_board):
    token = shared_board.token("submitter")
    with signed_in(shared_board, token) as phone, signed_in(shared_board, token) as laptop:
        assert phone.cookies.get(COOKIE) != laptop.cookies.get(COOKIE)
        phone.post("/signout", data={"csrf": csrf_of(phone.get("/").text)})
        assert phone.get("/api/v1/jobs").status_code == 401
        assert laptop.get("/api/v1/jobs").status_code == 200  # signing out one leaves the other


tls_board = board_with({"BOARD_SECURE_COOKIES": "1"})


def test_behind_tls_the_session_cookie_is_secure_even_over_the_proxy_s_plain_http(tls_board):
    with httpx.Client(base_url=tls_board.url) as browser:
        r = browser.post("/signin", data={"token": tls_board.admin_token, "next": "/"})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
