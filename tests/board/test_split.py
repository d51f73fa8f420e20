"""The board's half of a split render (docs/architecture.md, "Split render"), over real HTTP with
farmhands played by the test: when a job splits and when it does not, who may take a part,
cancel reaching every piece, a failed piece abandoning the split, the job's view."""

from __future__ import annotations

import concurrent.futures
import time

from tests.board.actors import API, CPU_ALL, Farmhand, Submitter, new_lane
from tests.board.conftest import board_with
from tests.dashboard.web import signed_in

split_board = board_with({"BOARD_SPLIT_MIN_WORK_S": "0"})


def _twelve(submitter: Submitter, media_dir) -> dict:
    a, b = (submitter.upload(media_dir / n)["id"] for n in ("a.mp4", "b.mp4"))
    return submitter.compilation(*([a, b] * 6), transitions={"effect": "fade", "duration": 0.3})


def _submit_to_waiting(submitter: Submitter, *farmhands: Farmhand, **submit):
    """The farmhands long-poll, then a job is submitted: (the job, each farmhand's lease)."""
    with concurrent.futures.ThreadPoolExecutor(len(farmhands)) as pool:
        waiting = [pool.submit(fh.claim, 10) for fh in farmhands]
        time.sleep(0.5)  # their claims wait on the board
        job = submitter.submit_ok(**submit)
        return job, [w.result(timeout=20) for w in waiting]


def _split_between_two(board, media_dir):
    """A submitter, two farmhands waiting, and a job of twelve items split between them."""
    lane = new_lane()
    alice = Submitter(board, lane=lane)
    first, second = Farmhand(board, lane=lane), Farmhand(board, lane=lane)
    job, leases = _submit_to_waiting(alice, first, second, compilation=_twelve(alice, media_dir))
    return alice, first, second, job, leases


def test_a_job_splits_when_another_farmhand_waits_and_cancel_reaches_every_piece(
    split_board, media_dir
):
    alice, first, second, job, (mine, theirs) = _split_between_two(split_board, media_dir)

    view = alice.job(job["id"])
    assert view["state"] == "running" and view["stage"] == "split"
    kinds = [p["kind"] for p in view["parts"]]
    assert kinds[-1] == "audio" and kinds.count("part") == 2, kinds
    assert {mine.job_id, theirs.job_id} == {p["id"] for p in view["parts"][:2]}
    mine = mine if mine.job_id == view["parts"][0]["id"] else theirs
    context = mine.context().json()
    assert context["kind"] == "part" and context["encoder"] == "libx264"
    assert context["part"]["of"] == 2 and context["sources"]
    assert set(context["probes"]) >= set(context["sources"])  # the whole plan, unfetched
    # only the parent is listed; its page shows who renders each piece
    assert [j["id"] for j in alice.http.get(f"{API}/jobs").json()["items"]] == [job["id"]]
    with signed_in(split_board, split_board.admin_token) as admin:
        page = admin.get(f"/jobs/{job['id']}").text
    assert "Split across farmhands" in page
    assert first.name in page and second.name in page and ">audio<" in page

    r = alice.http.post(f"{API}/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert all(p["state"] == "cancelled" for p in alice.job(job["id"])["parts"])
    assert mine.heartbeat().json()["cancel"] is True
    assert theirs.heartbeat().json()["cancel"] is True


def test_a_lone_farmhand_a_web_clip_or_split_never_renders_the_job_whole(split_board, media_dir):
    lane = new_lane()
    alice = Submitter(split_board, lane=lane)
    compilation = _twelve(alice, media_dir)
    alone = alice.submit_ok(compilation)
    first = Farmhand(split_board, lane=lane, slots=3)
    assert first.claim_ok().job_id == alone["id"]  # nobody else waits: whole
    assert alice.job(alone["id"])["parts"] == []
    second = Farmhand(split_board, lane=lane, slots=3)
    web = {**compilation, "clips": [*compilation["clips"], {"url": "https://example.com/c.mp4"}]}
    for body in ({"compilation": compilation, "split": "never"}, {"compilation": web}):
        job, leases = _submit_to_waiting(alice, first, second, **body)
        taken = [lease for lease in leases if lease is not None]
        assert [lease.job_id for lease in taken] == [job["id"]]  # one farmhand, the whole job
        assert alice.job(job["id"])["parts"] == []


def test_parts_go_only_to_farmhands_that_verified_the_splits_encoder(split_board, media_dir):
    lane = new_lane()
    alice = Submitter(split_board, lane=lane)
    x264 = Farmhand(split_board, lane=lane, encoders=("libx264",))
    other = Farmhand(split_board, lane=lane, encoders=("libx264", "libx265"))
    job, _ = _submit_to_waiting(
        alice, x264, other, compilation=_twelve(alice, media_dir), requirements={"encoder": "cpu"}
    )
    parts = alice.job(job["id"])["parts"]
    assert {parts[0]["farmhand"], parts[1]["farmhand"]} == {x264.name, other.name}
    # a farmhand without libx264 is never handed a part encoded with it
    svt_only = Farmhand(split_board, lane=lane, encoders=("libsvtav1",))
    assert svt_only.claim() is None
    # the audio goes to anyone able to render the job's codec
    audio = Farmhand(split_board, lane=lane, encoders=CPU_ALL).claim_ok()
    assert audio.context().json()["kind"] == "audio"


def test_a_piece_that_fails_for_good_abandons_the_split_and_the_job_renders_whole(
    split_board, media_dir
):
    alice, _, _, job, (mine, theirs) = _split_between_two(split_board, media_dir)
    r = mine.fail("part 1 of 2 was planned from other facts", retryable=False)
    assert r.status_code == 200, r.text
    view = alice.job(job["id"])
    assert view["state"] == "queued" and view["stage"] is None
    assert all(p["state"] in ("failed", "cancelled") for p in view["parts"])
    assert theirs.heartbeat().json()["cancel"] is True
    whole = Farmhand(split_board, lane=alice.lane).claim_ok()
    assert whole.job_id == job["id"] and whole.context().json()["kind"] == "render"
