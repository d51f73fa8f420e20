"""What the dashboard pages say, read over HTTP as a signed-in browser gets them: the job list
sorted by its headers, the farm summary's figures, a job's ETA, the farmhand roster's
quarantine badge and its Revoke button."""

from __future__ import annotations

import re
import time

from tests.board.actors import API, Farmhand, Submitter, new_lane
from tests.dashboard.web import page_csrf, signed_in
from tests.harness import RunningBoard


def _order(html: str, ids: list[str]) -> list[str]:
    """``ids`` in the order their rows appear on the page."""
    rows = re.findall(r'<tr id="job-([^"]+)"', html)
    return [i for i in rows if i in ids]


def _stat(summary_html: str, label: str) -> tuple[str, str]:
    """(value, note) of the summary's stat ``label``."""
    found = re.search(
        r'<div class="stat-value">([^<]*)</div>\s*<div class="stat-label">'
        + re.escape(label)
        + r'</div>\s*(?:<div class="stat-note">([^<]*)</div>)?',
        summary_html,
    )
    assert found, f"no {label!r} stat in:\n{summary_html}"
    return found.group(1), found.group(2) or ""


def test_clicking_a_header_sorts_the_jobs_by_it_and_again_flips_the_order(shared_board, media_dir):
    alice = Submitter(shared_board)
    clip = alice.upload(media_dir / "a.mp4")["id"]
    made = {}
    for title, priority in (("bravo", 5), ("charlie", -3), ("alpha", 9)):
        body = alice.compilation(clip, title=title)
        made[title] = alice.submit_ok(body, priority=priority, requirements={"tags": [new_lane()]})[
            "id"
        ]
    ids = list(made.values())
    with signed_in(shared_board, alice.token) as browser:
        home = browser.get("/").text
        # newest first by default; the Priority header links to "highest first"
        assert _order(home, ids) == [made["alpha"], made["charlie"], made["bravo"]]
        assert 'aria-sort="descending"><a href="/?sort=created">Elapsed · ETA' in home
        link = re.search(r'<a href="(/\?sort=-priority)">Priority', home)
        assert link, home
        by_priority = browser.get(link.group(1)).text
        assert _order(by_priority, ids) == [made["alpha"], made["bravo"], made["charlie"]]
        assert 'aria-sort="descending"><a href="/?sort=priority">Priority' in by_priority
        flipped = browser.get("/?sort=priority").text
        assert _order(flipped, ids) == [made["charlie"], made["bravo"], made["alpha"]]
        assert 'aria-sort="ascending"' in flipped
        by_title = browser.get("/?sort=-title").text
        assert _order(by_title, ids) == [made["charlie"], made["bravo"], made["alpha"]]
        assert _order(browser.get("/?sort=title").text, ids) == [
            made["alpha"], made["bravo"], made["charlie"]
        ]  # fmt: skip
        # a tab keeps the order; an unknown sort falls back to the default, never a 500
        assert "sort=-priority" in re.search(r'href="([^"]*state=queued[^"]*)"', by_priority)[1]
        r = browser.get("/?sort=;drop table jobs")
        assert r.status_code == 200
        assert _order(r.text, ids) == [made["alpha"], made["charlie"], made["bravo"]]


def test_the_summary_counts_rendered_video_and_queue_wait_and_a_job_shows_its_eta(
    shared_board, media_dir
):
    # HEVC jobs and a farmhand with only libx265: it cannot take the other tests' H.264 jobs
    lane = new_lane()
    alice = Submitter(shared_board, lane=lane)
    hand = Farmhand(shared_board, lane=lane, encoders=("libx265",))
    video = (media_dir / "a.mp4").read_bytes()  # 2.0 s
    clip = alice.upload(media_dir / "a.mp4")["id"]

    def hevc(title: str) -> dict:
        return alice.compilation(clip, title=title, output={"codec": "hevc"})

    done_id = alice.submit_ok(hevc("done one"))["id"]
    with signed_in(shared_board, alice.token) as browser:
        summary = browser.get("/").text
        assert _stat(summary, "done last hour") == ("0", "0s of video rendered")
        assert _stat(summary, "queue wait") == ("—", "no claims in the last hour")
        assert _stat(summary, "queued")[0] == "1"

        time.sleep(2.2)  # in the queue for a measurable while
        lease = hand.claim_ok()
        assert lease.job_id == done_id
        lease.finish(video)

        running_id = alice.submit_ok(hevc("running one"))["id"]
        time.sleep(1.1)
        running = hand.claim_ok()
        assert running.job_id == running_id
        assert running.heartbeat(0.4, eta_s=65.0).status_code == 200

        summary = browser.get("/").text
        assert _stat(summary, "done last hour") == ("1", "2s of video rendered")
        value, note = _stat(summary, "queue wait")
        # two claims after at least 2.2 s and 1.1 s in the queue (only lower bounds: a slow
        # machine makes the waits longer, never shorter)
        p90 = re.fullmatch(r"median, p90 (\d+)s \(last hour\)", note)
        assert re.fullmatch(r"\d+s", value) and int(value[:-1]) >= 1, value
        assert p90 and int(p90[1]) >= 2, note
        assert _stat(summary, "rendering") == ("1", "0 claimed, 1 running")  # it heartbeat
        row = re.search(rf'<tr id="job-{running_id}".*?</tr>', summary, re.S)[0]
        assert 'data-kind="eta" data-eta="65.0"' in row
        assert "rendering · 40%" in row
        page = browser.get(f"/jobs/{running_id}").text
        assert 'data-eta="65.0"' in page


def test_the_summary_counts_farmhands_online_working_on_hold_and_gone(board_factory, media_dir):
    """The farmhand figures are counted by the database (a fleet's rows never reach Python):
    online means seen within a lease, working means holding a job, on hold means paused by its
    owner or an admin, and a revoked farmhand is no longer one of the farm's."""
    board = board_factory(BOARD_LEASE_S="3", BOARD_HEARTBEAT_S="1")
    lane = new_lane()
    alice = Submitter(board, lane=lane)
    working, idle, paused, drained, silent, revoked = (Farmhand(board, lane=lane) for _ in range(6))
    alice.submit_ok(alice.compilation(alice.upload(media_dir / "a.mp4")["id"]))
    lease = working.claim_ok()
    for hand in (idle, drained, silent, revoked):
        assert hand.claim_response().status_code == 204  # nothing left: seen, not working
    with board.admin() as admin:
        for hand, action in ((drained, "drain"), (revoked, "revoke")):
            r = admin.post(f"{API}/farmhands/{hand.name}/{action}", json={"reason": "test"})
            assert r.status_code == 200, r.text
    # `silent` and `revoked` say nothing for longer than a lease; the others keep checking in
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        assert lease.heartbeat(0.5).status_code == 200
        assert idle.claim_response().status_code == 204
        assert drained.claim_response().status_code == 204
        assert paused.report_status(paused=True, reason="gaming").status_code == 200
        time.sleep(0.5)
    with signed_in(board, board.admin_token) as browser:
        summary = browser.get("/").text
    # online: working, idle, paused, drained; the farm: those and silent (revoked is not)
    assert _stat(summary, "farmhands") == ("4 / 5", "online · 1 working, 2 on hold")


def test_a_farmhand_failing_jobs_in_a_row_is_shown_quarantined_and_can_be_revoked(
    tmp_path, media_dir
):
    board = RunningBoard(tmp_path, "sqlite", env={"BOARD_QUARANTINE_AFTER": "2",
                                                  "BOARD_RETRY_BASE_S": "30"}).start()  # fmt: skip
    try:
        lane = new_lane()
        alice = Submitter(board, lane=lane)
        hand = Farmhand(board, lane=lane)
        clip = alice.upload(media_dir / "a.mp4")["id"]
        for n in range(2):
            alice.submit_ok(alice.compilation(clip, title=f"doomed {n}"))
            lease = hand.claim_ok()
            assert lease.fail("NVENC exploded", retryable=True).status_code == 200
        with signed_in(board, board.admin_token) as admin:
            html = admin.get("/farmhands").text
            row = re.search(rf'<tr id="fh-[^"]*" data-name="{hand.name}".*?</tr>', html, re.S)[0]
            assert 'data-status="quarantined"' in row
            assert '<span class="badge badge-fh-quarantined">quarantined</span>' in row
            assert "quarantined after 2 failed or lost jobs in a row" in row
            assert "NVENC exploded" in row
            assert "2 failed in a row" in row
            assert ">Resume</button>" in row and ">Revoke</button>" in row
            assert "on hold" in admin.get("/").text  # the summary counts it as stopped
            # quarantined: claims get nothing, even with work queued for it
            alice.submit_ok(alice.compilation(clip, title="waiting"))
            assert hand.claim_response().status_code == 204

            # the Revoke button: the page's script posts its data-url with the CSRF token
            url = re.search(r'data-action="revoke" data-url="([^"]+)"', row)[1]
            assert url == f"/api/v1/farmhands/{hand.name}/revoke"
            csrf = page_csrf(admin, "/farmhands")
            refused = admin.post(url, json={"reason": "stolen PC"})
            assert refused.status_code == 403  # no CSRF token: not one of this board's pages
            r = admin.post(url, json={"reason": "stolen PC"}, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text
            row = re.search(rf'<tr id="fh-[^"]*" data-name="{hand.name}".*?</tr>', admin.get("/farmhands").text,
                            re.S)[0]  # fmt: skip
            assert 'data-status="revoked"' in row and ">Revoke</button>" not in row
        # the board refuses it from now on: revoking a farmhand revokes its token
        for r in (hand.claim_response(), hand.report_status()):
            assert r.status_code == 401, r.text
            assert "revoked" in r.text
    finally:
        board.close()
