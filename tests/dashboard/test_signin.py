"""Signing in and out: a cookie the page's scripts cannot read, sent only to this board, and a
browser without one sent to the sign-in page."""

from __future__ import annotations

import httpx
import pytest

from board.dashboard.session import safe_next
from tests.dashboard.web import csrf_of, signed_in


def test_a_page_without_a_session_sends_the_browser_to_sign_in(shared_board):
    with httpx.Client(base_url=shared_board.url) as anon:
        r = anon.get("/farmhands", params={"x": "1"})
        assert r.status_code == 303
        assert r.headers["location"] == "/signin?next=/farmhands%3Fx%3D1"
        page = anon.get(r.headers["location"])
        assert page.status_code == 200 and 'name="token"' in page.text
        assert 'value="/farmhands?x=1"' in page.text  # comes back here after signing in
        # the API and the live stream still answer JSON 401, not a redirect
        assert anon.get("/api/v1/jobs").status_code == 401
        assert anon.get("/dashboard/events").status_code == 401


def test_a_link_from_another_site_gets_one_same_site_hop_for_the_strict_cookie(shared_board):
    with httpx.Client(base_url=shared_board.url) as anon:
        r = anon.get("/jobs/j123", headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 200
        assert '<meta http-equiv="refresh" content="0;url=/jobs/j123">' in r.text


def test_sign_in_sets_an_httponly_strict_cookie_and_returns_to_the_page(shared_board):
    with httpx.Client(base_url=shared_board.url) as browser:
        r = browser.post("/signin", data={"token": shared_board.admin_token, "next": "/farmhands"})
        assert r.status_code == 303 and r.headers["location"] == "/farmhands"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("clipfarm_session=cs_")  # a session id, never the token
        assert shared_board.admin_token not in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain http here; https requests get Secure
        page = browser.get("/farmhands")
        assert page.status_code == 200 and ">admin<" in page.text
        assert browser.get("/signin").headers["location"] == "/"  # signed in already


@pytest.mark.parametrize(
    ("role", "status", "says"),
    [
        (None, 401, "unknown or was revoked"),
        ("farmhand", 403, "A farmhand token cannot sign in"),
        ("revoked", 401, "unknown or was revoked"),
    ],
)
def test_sign_in_refuses_unknown_revoked_and_farmhand_tokens(shared_board, role, status, says):
    token = "cf_not-a-real-token"
    if role == "farmhand":
        token = shared_board.token("farmhand")
    elif role == "revoked":
        token = shared_board.token("submitter", "leaver")
        with shared_board.admin() as admin:
            assert admin.delete("/api/v1/tokens/leaver").status_code == 204
    with httpx.Client(base_url=shared_board.url) as browser:
        r = browser.post("/signin", data={"token": token})
        assert r.status_code == status and says in r.text
        assert "set-cookie" not in r.headers


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}],
)
def test_sign_in_posted_from_another_site_is_refused(shared_board, headers):
    with httpx.Client(base_url=shared_board.url) as browser:
        r = browser.post("/signin", data={"token": shared_board.admin_token}, headers=headers)
        assert r.status_code == 403 and "set-cookie" not in r.headers
        same = browser.post(
            "/signin", data={"token": shared_board.admin_token},
            headers={"Origin": shared_board.url, "Sec-Fetch-Site": "same-origin"},
        )  # fmt: skip
        assert same.status_code == 303


@pytest.mark.parametrize(
    ("asked", "goes"),
    [
        ("/jobs/j1?x=1", "/jobs/j1?x=1"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/signout", "/"),
        ("", "/"),
    ],
)
def test_after_sign_in_the_browser_never_leaves_the_board(asked, goes):
    assert safe_next(asked) == goes


def test_sign_out_needs_the_page_s_csrf_token_then_clears_the_cookie(shared_board):
    with signed_in(shared_board, shared_board.token("submitter")) as browser:
        forged = browser.post("/signout")
        assert forged.status_code == 403
        assert browser.get("/").status_code == 200  # still signed in
        csrf = csrf_of(browser.get("/").text)
        r = browser.post("/signout", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/signin"
        assert "Max-Age=0" in r.headers["set-cookie"]
        assert browser.get("/").status_code == 303  # back to the sign-in page
