"""The dashboard in a real browser (Chromium via Playwright) against real board and farmhand
processes: what the issue says it must show."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import PHONE, farmhand_view, job, say_hello, submit, upload
from tests.harness import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

XSS_TITLE = "<img src=x onerror=alert(1)>"


def test_jobs_appear_live_and_a_claim_shows_its_farmhand_and_advancing_progress(
    farm, open_dashboard, heavy_clips, media_dir, screenshots
):
    board = farm.board(BOARD_HEARTBEAT_S="1", BOARD_LEASE_S="10")
    alice = board.client(board.token("submitter", "alice"))
    dash = open_dashboard(board, board.admin_token)
    page = dash.open("/")

    # A working day: a quick job, one waiting for a GPU nobody has, a cancelled one and one
    # whose source is unreachable. Each appears on the open page as it is submitted.
    intro, clip, outro = (upload(alice, media_dir / n) for n in ("intro.mp4", "a.mp4", "b.mp4"))
    quick = submit(alice, "Daily clips — draft", [clip], priority=5)
    submit(alice, "4K season recap (needs a GPU)", [clip], requirements={"encoder": "gpu"})
    cancelled = submit(alice, "Duplicate upload", [clip])
    alice.post(f"/api/v1/jobs/{cancelled}/cancel").raise_for_status()
    broken = alice.post("/api/v1/jobs", json={"max_attempts": 1, "compilation": {
        "title": "Guest clips from the stream", "output": {"width": 320, "height": 180},
        "clips": [{"url": "http://127.0.0.1:9/missing-clip.mp4"}]}}).json()["id"]  # fmt: skip
    expect(dash.row(quick).locator(".c-state")).to_have_text("queued")
    expect(dash.row(quick).locator(".c-submitter")).to_have_text("alice")
    expect(dash.row(cancelled).locator(".c-state")).to_have_text("cancelled")

    farm.farmhand(board, "pc-indigo")
    expect(dash.row(quick).locator(".c-farmhand")).to_have_text("pc-indigo", timeout=30_000)
    expect(dash.row(quick).locator(".c-state")).to_have_text("succeeded", timeout=60_000)
    expect(dash.row(broken).locator(".c-state")).to_have_text("failed", timeout=60_000)

    heavy = [upload(alice, p) for p in heavy_clips]
    r = alice.post("/api/v1/jobs", json={"priority": 10, "compilation": {
        "title": "Week 47 highlights", "intro": {"media": intro}, "outro": {"media": outro},
        "clips": [{"media": heavy[0], "creator": "alice", "title": "triple kill"},
                  {"media": heavy[1], "creator": "bob", "title": "clutch"}],
        "output": {"width": 1280, "height": 720, "fps": 30, "quality": "high"},
        "transitions": {"effect": "fade", "duration": 0.5}}})  # fmt: skip
    job_id = r.json()["id"]
    row = dash.row(job_id)
    expect(row.locator(".c-farmhand")).to_have_text("pc-indigo", timeout=30_000)
    first = wait_for(
        lambda: (v := dash.bar_value(job_id)) > 0 and v, 60, what="the progress bar to move"
    )
    wait_for(lambda: dash.bar_value(job_id) > first, 60, what="the progress bar to advance")
    expect(row.locator(".c-state")).to_have_text("running")
    assert dash.not_reloaded()
    page.screenshot(path=screenshots / "jobs.png")

    expect(row.locator(".c-state")).to_have_text("succeeded", timeout=90_000)
    assert dash.bar_value(job_id) == 100
    expect(page.locator("#summary .stat-succeeded .stat-value")).to_have_text("2")  # last hour
    assert dash.not_reloaded()

    page.click(f"#job-{job_id} a.job-title")
    page.wait_for_url(f"**/jobs/{job_id}")
    expect(page.locator("h1.job-page-title")).to_have_text("Week 47 highlights")
    expect(page.locator(".farmhand-name").first).to_have_text("pc-indigo")
    page.wait_for_function("document.querySelector('#job-output video').readyState >= 1")
    page.wait_for_function("document.querySelector('#job-output img.thumb').naturalWidth > 0")
    assert page.locator("#job-attempts").get_by_text("libx264").count() >= 1
    page.screenshot(path=screenshots / "job.png", full_page=True)

    phone = open_dashboard(board, board.admin_token, viewport=PHONE, device_scale_factor=2,
                           is_mobile=True, has_touch=True)  # fmt: skip
    phone.open("/")
    expect(phone.row(job_id)).to_be_visible()
    phone.page.screenshot(path=screenshots / "jobs-phone.png")
    dark = open_dashboard(board, board.admin_token, color_scheme="dark")
    dark.open(f"/jobs/{job_id}")
    dark.page.screenshot(path=screenshots / "job-dark.png")
    assert not dash.dialogs and not phone.dialogs and not dark.dialogs


def test_cancel_retry_and_priority_from_the_job_page_change_the_job_on_the_board(
    farm, open_dashboard, media_dir
):
    board = farm.board()  # no farmhand: the job stays where the page puts it
    alice = board.client(board.token("submitter", "alice"))
    clip = upload(alice, media_dir / "a.mp4")
    job_id = submit(alice, "Friday montage", [clip])
    dash = open_dashboard(board, board.admin_token)
    page = dash.open(f"/jobs/{job_id}")
    head = page.locator("#job-head")

    head.get_by_role("button", name="Cancel job").click()
    page.locator("#reason-confirm").click()
    wait_for(lambda: job(alice, job_id)["state"] == "cancelled", 10, what="the cancel")
    expect(head.locator(".badge")).to_have_text("cancelled")

    head.get_by_role("button", name="Retry job").click()
    wait_for(lambda: job(alice, job_id)["state"] == "queued", 10, what="the retry")
    expect(head.locator(".badge")).to_have_text("queued")

    page.fill("#priority-input", "7")
    head.get_by_role("button", name="Set priority").click()
    wait_for(lambda: job(alice, job_id)["priority"] == 7, 10, what="the new priority")
    expect(head.locator(".job-priority")).to_have_text("7")
    events = page.locator("#job-events")
    expect(events).to_contain_text("cancelled by admin")
    expect(events).to_contain_text("retried by admin")
    assert dash.not_reloaded() and not dash.dialogs


def test_a_farmhand_paused_from_the_page_stops_claiming_and_shows_why(
    farm, open_dashboard, media_dir, screenshots
):
    board = farm.board(BOARD_HEARTBEAT_S="1", BOARD_LEASE_S="10")
    admin = board.admin()
    alice = board.client(board.token("submitter", "alice"))
    clip = upload(alice, media_dir / "b.mp4")
    # Short claim long-polls: a poll that began before the pause may still hand out one job
    # (the board re-checks a farmhand's state between polls, not within one).
    farm.farmhand(board, "pc-green", FARMHAND_WAIT_S="1")
    farm.farmhand(board, "pc-blue", FARMHAND_WAIT_S="1", FARMHAND_TAGS="nvme")
    dash = open_dashboard(board, board.admin_token)
    page = dash.open("/farmhands")
    rows = {name: page.locator(f'tr[data-name="{name}"]') for name in ("pc-green", "pc-blue")}
    for row in rows.values():
        expect(row.locator(".c-status .badge")).to_have_text("idle", timeout=30_000)

    def stop(name: str, button: str, reason: str) -> None:
        rows[name].get_by_role("button", name=button).click()
        page.fill("#reason-input", reason)
        page.locator("#reason-confirm").click()

    stop("pc-green", "Pause", "GPU driver update tonight")
    stop("pc-blue", "Drain", "owner's LAN party at 20:00")
    green = rows["pc-green"]
    expect(green.locator(".c-status .badge")).to_have_text("paused")
    expect(green.locator(".c-status .reason")).to_have_text("GPU driver update tonight")
    expect(rows["pc-blue"].locator(".c-status .badge")).to_have_text("draining")
    seen = farmhand_view(admin, "pc-green")
    assert seen["state"] == "paused" and seen["reason"] == "GPU driver update tonight"

    time.sleep(1.5)  # let the polls that began before the pause run out
    job_id = submit(alice, "Paused farm test", [clip])
    time.sleep(3)  # both farmhands keep polling the board all this time
    assert job(alice, job_id)["state"] == "queued"
    # paused, not gone: it is still seen polling, it just gets nothing
    assert farmhand_view(admin, "pc-green")["online"] is True
    page.screenshot(path=screenshots / "farmhands.png")

    green.get_by_role("button", name="Resume").click()
    expect(green.locator(".c-status .badge")).not_to_have_text("paused")
    done = wait_for(
        lambda: (j := job(alice, job_id))["state"] in ("succeeded", "failed") and j,
        60,
        what="the resumed farmhand to render the job",
    )
    assert done["state"] == "succeeded" and done["farmhand"] == "pc-green"
    assert dash.not_reloaded() and not dash.dialogs


def test_user_supplied_strings_are_shown_as_text(farm, open_dashboard, media_dir):
    board = farm.board()
    admin = board.admin()
    alice = board.client(board.token("submitter", "alice"))
    clip = upload(alice, media_dir / "a.mp4")
    name = say_hello(board)
    reason = "<script>alert(2)</script><b>bold?</b>"
    admin.post(f"/api/v1/farmhands/{name}/pause", json={"reason": reason}).raise_for_status()
    dash = open_dashboard(board, board.admin_token)
    page = dash.open("/")

    job_id = submit(alice, XSS_TITLE, [clip])
    row = dash.row(job_id)
    expect(row.locator(".job-title")).to_have_text(XSS_TITLE)  # arrived over the live stream
    assert row.locator("img").count() == 0
    page.reload()
    expect(row.locator(".job-title")).to_have_text(XSS_TITLE)  # rendered by the server
    assert row.locator("img").count() == 0
    page.click(f"#job-{job_id} a.job-title")
    expect(page.locator("h1.job-page-title")).to_have_text(XSS_TITLE)
    assert page.locator("#job-head img, #job-head script").count() == 0
    dash.open("/farmhands")
    expect(page.locator(f'tr[data-name="{name}"] .reason')).to_have_text(reason)
    assert page.locator(f'tr[data-name="{name}"] b, tr[data-name="{name}"] script').count() == 0
    page.wait_for_timeout(500)  # an onerror handler would have fired by now
    assert dash.dialogs == []


def test_the_page_recovers_by_itself_when_the_board_restarts(farm, open_dashboard, media_dir):
    board = farm.board()
    alice = board.client(board.token("submitter", "alice"))
    clip = upload(alice, media_dir / "a.mp4")
    dash = open_dashboard(board, board.admin_token)
    page = dash.open("/")
    before = submit(alice, "before the restart", [clip])
    expect(dash.row(before)).to_be_visible()
    page.evaluate(
        """() => new MutationObserver(() => {
             if (document.getElementById('live').dataset.state === 'down') window.__sawDown = true;
           }).observe(document.getElementById('live'), {attributes: true})"""
    )

    board.restart()
    dash.wait_live(timeout=30_000)
    after = submit(alice, "after the restart", [clip])
    expect(dash.row(after)).to_be_visible(timeout=15_000)
    expect(dash.row(after).locator(".c-state")).to_have_text("queued")
    assert page.evaluate("window.__sawDown === true")  # it noticed, and came back by itself
    assert dash.not_reloaded()
