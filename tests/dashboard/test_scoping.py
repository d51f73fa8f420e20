"""Who sees what: a submitter sees their own jobs and a read-only farm; every user-supplied
string reaches the page as text."""

from __future__ import annotations

import secrets

from tests.dashboard.conftest import farmhand_view, say_hello, submit, upload
from tests.dashboard.web import first_snapshots, page_csrf, signed_in, snapshot_html

XSS_TITLE = "<img src=x onerror=alert(1)>"


def _submitter(board, media_dir, title: str):
    name = f"sub-{secrets.token_hex(3)}"
    token = board.token("submitter", name)
    api = board.client(token)
    return name, token, api, submit(api, title, [upload(api, media_dir / "a.mp4")])


def test_a_submitter_sees_only_their_own_jobs(shared_board, media_dir):
    _, alice_token, _, alice_job = _submitter(shared_board, media_dir, "alice's weekly cut")
    _, _, _, bob_job = _submitter(shared_board, media_dir, "bob's secret project")
    with signed_in(shared_board, alice_token) as alice:
        page = alice.get("/").text
        assert "alice&#39;s weekly cut" in page and alice_job in page
        assert "bob" not in page and bob_job not in page
        assert alice.get(f"/jobs/{bob_job}").status_code == 404
        assert alice.get(f"/jobs/{alice_job}").status_code == 200
        [snapshot] = first_snapshots(alice, "view=jobs")
        assert [key for key, _ in snapshot["lists"]["job-rows"]] == [alice_job]
    with signed_in(shared_board, shared_board.admin_token) as admin:
        page = admin.get("/").text
        assert alice_job in page and bob_job in page


def test_a_submitter_gets_a_read_only_farm_without_others_job_titles(shared_board, media_dir):
    _, alice_token, _, _ = _submitter(shared_board, media_dir, "alice's job")
    bob = shared_board.client(shared_board.token("submitter", f"bob-{secrets.token_hex(3)}"))
    bob_job = submit(bob, "bob's confidential render", [upload(bob, media_dir / "a.mp4")],
                     priority=1000)  # fmt: skip  # the first job any farmhand gets
    token = shared_board.token("farmhand", f"claimer-{secrets.token_hex(3)}")
    name = say_hello(shared_board, token=token)
    hand = shared_board.client(token)
    r = hand.post("/api/v1/farmhand/claim", json={"farmhand": name, "capabilities": {
        "encoders": ["libx264"]}})  # fmt: skip
    assert r.status_code == 200 and r.json()["job_id"] == bob_job, r.text
    with signed_in(shared_board, alice_token) as alice:
        html = alice.get("/farmhands").text
        assert f'data-name="{name}"' in html
        assert "data-action" not in html  # no pause / resume / drain / revoke buttons
        assert "confidential" not in html and bob_job not in html
        assert "another submitter's job" in html
        csrf = page_csrf(alice, "/farmhands")
        r = alice.post(
            f"/api/v1/farmhands/{name}/pause", json={"reason": "x"}, headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 403  # the action routes stay admin-only
    assert farmhand_view(shared_board.admin(), name)["state"] == "active"
    with signed_in(shared_board, shared_board.admin_token) as admin:
        html = admin.get("/farmhands").text
        assert 'data-action="pause"' in html and "bob&#39;s confidential render" in html


def test_titles_and_reasons_are_escaped_in_pages_and_in_live_updates(shared_board, media_dir):
    _, token, _, job_id = _submitter(shared_board, media_dir, XSS_TITLE)
    name = say_hello(shared_board)
    reason = '"><script>alert(2)</script>'
    with shared_board.admin() as admin:
        admin.post(f"/api/v1/farmhands/{name}/pause", json={"reason": reason}).raise_for_status()
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    with signed_in(shared_board, token) as browser:
        for path in ("/", f"/jobs/{job_id}"):
            html = browser.get(path).text
            assert escaped in html and XSS_TITLE not in html
        [snapshot] = first_snapshots(browser, "view=jobs")
        live = snapshot_html(snapshot)
        assert escaped in live and XSS_TITLE not in live
        farm = browser.get("/farmhands").text
        assert "&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in farm
        assert "<script>alert(2)" not in farm


def test_pages_forbid_inline_scripts_and_framing(shared_board):
    with signed_in(shared_board, shared_board.admin_token) as browser:
        r = browser.get("/")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["cache-control"] == "no-store"
        scripts = r.text.count("<script")
        assert scripts == r.text.count('<script src="/static/dashboard/dashboard.js?v=') == 1
        assert browser.get("/static/dashboard/dashboard.css").status_code == 200
