"""Submitter limits: the monthly render budget at submit, usage from the real output at
completion, and the caps the context applies (resolution, fps, clips, forced watermark)."""

from __future__ import annotations

from tests.board.actors import API, http_client


def _set_limits(board, name: str, **limits) -> dict:
    with http_client(board, board.admin_token) as admin:
        r = admin.put(f"{API}/submitters/{name}/limits", json=limits)
        assert r.status_code == 200, r.text
        return r.json()


def _submitter_view(board, name: str) -> dict:
    with http_client(board, board.admin_token) as admin:
        r = admin.get(f"{API}/submitters/{name}")
        assert r.status_code == 200, r.text
        return r.json()


def test_a_new_submitter_has_no_limits(shared_board, submitter):
    view = _submitter_view(shared_board, submitter.name)
    assert set(view["limits"].values()) == {None}
    assert view["render_seconds_this_month"] == 0


def test_submit_over_the_monthly_render_budget_is_refused(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    clip = submitter.upload(media_dir / "b.mp4")  # 2 s
    _set_limits(shared_board, submitter.name, monthly_render_seconds=5)
    c = submitter.compilation(clip["id"])
    first = submitter.submit_ok(c)
    assert 1.9 < first["estimate_s"] < 2.1
    submitter.submit_ok(c)  # 4 s of the 5 s promised to unfinished jobs
    r = submitter.submit(c)
    assert r.status_code == 403, r.text
    detail = r.json()["detail"]
    assert "estimated at 2.0 s" in detail and "only 1.0 s of the 5 monthly" in detail

    # Usage is recorded at completion from the real output (1 s here), not from the estimate.
    lease = farmhand_in_lane().claim_ok()
    shorter_than_planned = (media_dir / "intro.mp4").read_bytes()
    lease.finish(shorter_than_planned)
    view = _submitter_view(shared_board, submitter.name)
    assert 0.9 < view["render_seconds_this_month"] < 1.1
    assert view["storage_bytes"] >= clip["size"] + len(shorter_than_planned)
    done = submitter.job(lease.job_id)
    assert 0.9 < done["output"]["duration_s"] < 1.1
    # 1 s used + 2 s still pending leaves 2 s: a 2 s job fits again.
    assert submitter.submit(c).status_code == 201


def test_a_batch_spends_the_monthly_budget_item_by_item(shared_board, submitter, media_dir):
    """Items of one batch count against the budget as each is accepted, also within one writer
    unit (BATCH_CHUNK items): the ones past it are refused, the others are queued."""
    clip = submitter.upload(media_dir / "b.mp4")  # 2 s
    _set_limits(shared_board, submitter.name, monthly_render_seconds=7)
    items = [submitter.body(submitter.compilation(clip["id"], title=f"item {i}"))
             for i in range(5)]  # fmt: skip
    r = submitter.http.post(f"{API}/jobs/batch", json={"jobs": items})
    assert r.status_code == 200, r.text
    result = r.json()
    assert [item["status"] for item in result["items"]] == [201, 201, 201, 403, 403]
    assert "only 1.0 s of the 7 monthly" in result["items"][3]["error"]
    assert submitter.http.get(f"{API}/jobs").json()["total"] == 3  # nothing of the refused


def test_too_many_clips_are_refused_at_submit(shared_board, submitter, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")["id"]
    _set_limits(shared_board, submitter.name, max_clips=2)
    r = submitter.submit(submitter.compilation(clip, clip, clip))
    assert r.status_code == 400
    assert "3 clips, but this submitter may use at most 2" in r.json()["detail"]


def test_context_applies_the_limits_set_after_submit(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    a = submitter.upload(media_dir / "a.mp4")["id"]
    b = submitter.upload(media_dir / "b.mp4")["id"]
    logo = submitter.upload(media_dir / "logo.png")["id"]
    c = submitter.compilation(a, b, a, output={"width": 1280, "height": 720, "fps": 60})
    job = submitter.submit_ok(c)
    # The admin tightens the limits while the job waits in the queue.
    _set_limits(shared_board, submitter.name, max_width=640, max_height=640, max_fps=25,
                max_clips=2, forced_watermark=logo)  # fmt: skip
    farmhand = farmhand_in_lane()
    lease = farmhand.claim_ok()
    assert lease.job_id == job["id"]
    context = lease.context().json()
    output = context["compilation"]["output"]
    assert (output["width"], output["height"], output["fps"]) == (640, 360, 25)
    assert [clip["media"] for clip in context["compilation"]["clips"]] == [a, b]
    assert context["compilation"]["watermark"]["media"] == logo
    assert context["limits_applied"] == [
        "resolution capped to 640x360",
        "fps capped to 25",
        "clips cut to the first 2",
        "watermark forced by the submitter's limits",
    ]
    # The forced watermark is media of the job: its farmhand may download it.
    ref = context["media"][logo]
    r = farmhand.http.get(ref["url"], headers={"X-Lease-Token": lease.token})
    assert r.status_code == 200 and len(r.content) == ref["size"]


def test_storage_quota_refuses_uploads_past_it(shared_board, submitter, media_dir):
    first = submitter.upload(media_dir / "a.mp4")
    _set_limits(shared_board, submitter.name, storage_quota_bytes=first["size"] + 1000)
    r = submitter.http.post(f"{API}/media", content=(media_dir / "b.mp4").read_bytes())
    assert r.status_code == 413
    assert "1000 bytes left" in r.json()["detail"]
    tiny = submitter.upload(media_dir / "logo.png")  # a small picture still fits
    assert tiny["size"] < 1000


def test_limits_are_set_from_the_command_line(shared_board, submitter):
    shared_board.cli("limits", "set", submitter.name, "--max-width", "1920", "--max-fps", "30")
    limits = _submitter_view(shared_board, submitter.name)["limits"]
    assert (limits["max_width"], limits["max_fps"], limits["max_height"]) == (1920, 30, None)
