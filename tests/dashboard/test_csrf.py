"""The session cookie authenticates API calls too, so every state-changing call it authenticates
must carry the CSRF token of a dashboard page; Bearer clients are not affected."""

from __future__ import annotations

from board.dashboard.csrf import csrf_matches, csrf_token
from tests.dashboard.conftest import job, submit, upload
from tests.dashboard.web import page_csrf, signed_in


def test_csrf_token_is_bound_to_the_session_token():
    assert csrf_matches("cf_a", csrf_token("cf_a"))
    assert not csrf_matches("cf_b", csrf_token("cf_a"))
    assert not csrf_matches("cf_a", "")
    assert not csrf_matches("cf_a", None)


def test_a_cookie_authenticated_post_without_the_csrf_token_is_refused(shared_board, media_dir):
    token = shared_board.token("submitter")
    api = shared_board.client(token)
    job_id = submit(api, "csrf target", [upload(api, media_dir / "a.mp4")])
    with signed_in(shared_board, token) as browser:
        forged = browser.post(f"/api/v1/jobs/{job_id}/cancel")
        assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
        wrong = browser.post(
            f"/api/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": csrf_token("cf_other")}
        )
        assert wrong.status_code == 403
        assert job(api, job_id)["state"] == "queued"  # nothing happened

        # any route: a forged submit is refused as well
        body = {"compilation": {"clips": [{"url": "https://example.com/a.mp4"}]}}
        assert browser.post("/api/v1/jobs", json=body).status_code == 403

        csrf = page_csrf(browser)
        ok = browser.post(f"/api/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["state"] == "cancelled"
        assert browser.get(f"/api/v1/jobs/{job_id}").status_code == 200  # reads need no token
    # a Bearer client sends no cookie and needs no CSRF token
    assert api.post(f"/api/v1/jobs/{job_id}/retry").json()["state"] == "queued"
