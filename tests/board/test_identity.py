"""A farmhand is its token: what the board decided about it (revoked, quarantined, the slots it
declared) holds whatever name it sends, and a revoked token's long answers end with it."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx

from tests.board.actors import API, Farmhand, Submitter, farmhand_view, make_token


def _queued_job(submitter: Submitter, media_dir) -> str:
    clip = submitter.upload(media_dir / "a.mp4")["id"]
    return submitter.submit_ok(submitter.compilation(clip))["id"]


def test_a_revoked_farmhand_renamed_gets_no_job(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    pc1 = farmhand_in_lane(name=f"pc1-{submitter.lane}")
    assert pc1.report_status().status_code == 200
    with shared_board.admin() as admin:
        r = admin.post(f"{API}/farmhands/{pc1.name}/revoke", json={"reason": "stolen token"})
        assert r.status_code == 200 and r.json()["state"] == "revoked", r.text
    job = _queued_job(submitter, media_dir)

    pc1.name = f"{pc1.name}-renamed"  # same token, another name
    r = pc1.claim_response()
    assert r.status_code == 401, r.text
    assert pc1.report_status().status_code == 401
    assert submitter.job(job)["state"] == "queued"


def test_a_quarantined_farmhand_renamed_stays_quarantined(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    broken = farmhand_in_lane()
    clip = submitter.upload(media_dir / "a.mp4")["id"]
    for n in range(3):  # BOARD_QUARANTINE_AFTER=3 on the shared board
        submitter.submit_ok(submitter.compilation(clip))
        assert broken.claim_ok(wait_s=5).fail(f"encoder crashed ({n})").status_code == 200
    assert farmhand_view(shared_board, broken.name)["state"] == "quarantined"
    job = submitter.submit_ok(submitter.compilation(clip))["id"]

    old_name, broken.name = broken.name, f"{broken.name}-fresh-start"
    assert broken.claim(wait_s=0.5) is None, "a renamed quarantined farmhand got work"
    view = farmhand_view(shared_board, broken.name)
    assert view["state"] == "quarantined" and view["token"] == old_name
    assert submitter.job(job)["state"] == "queued"


def test_a_name_is_only_a_label_another_token_may_wear_it(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    """Two tokens sending the same name are two farmhands: the second can neither speak for the
    first (give back the job it was handed) nor be mistaken for it by an admin."""
    twin = f"twin-{submitter.lane}"
    tokens = [f"{n}-{twin}" for n in ("one", "two")]
    first, second = (
        Farmhand(
            shared_board,
            lane=submitter.lane,
            name=twin,
            token=make_token(shared_board, "farmhand", token),
        )
        for token in tokens
    )
    try:
        job = _queued_job(submitter, media_dir)
        lease = first.claim_ok(wait_s=5)
        assert second.claim_response().status_code == 204  # holds nothing, claims nothing
        assert submitter.job(job)["state"] == "claimed", "another token released the job"
        assert lease.heartbeat().status_code == 200
        with shared_board.admin() as admin:
            r = admin.post(f"{API}/farmhands/{twin}/pause")
            assert r.status_code == 409 and "by its token" in r.json()["detail"], r.text
            r = admin.post(f"{API}/farmhands/{tokens[1]}/pause")
            assert r.status_code == 200, r.text
            assert (r.json()["token"], r.json()["name"]) == (tokens[1], twin)
        assert farmhand_view(shared_board, twin)["state"] in ("active", "paused")
    finally:
        first.close()
        second.close()


def test_a_farmhand_declaring_one_slot_cannot_hold_two_claims(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    jobs = {_queued_job(submitter, media_dir) for _ in range(3)}
    one_slot = farmhand_in_lane(slots=1)
    first = one_slot.claim_ok(wait_s=5)
    assert one_slot.claim(wait_s=0.5) is None, "a second claim within one declared slot"
    # Claims racing each other from the same token: never more than one live lease.
    first.release()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: one_slot.claim_response(), range(4)))
    granted = [r.json() for r in answers if r.status_code == 200]
    assert granted, [r.status_code for r in answers]
    live = [
        g
        for g in granted
        if one_slot.http.post(
            f"{API}/farmhand/jobs/{g['job_id']}/heartbeat",
            json={"lease_token": g["lease_token"], "progress": 0.1},
        ).status_code
        == 200
    ]
    assert len(live) == 1, f"{len(live)} live leases for one slot"
    held = [j for j in jobs if submitter.job(j)["state"] in ("claimed", "running")]
    assert len(held) == 1

    two_slots = farmhand_in_lane(slots=2)
    assert two_slots.claim(wait_s=5) is not None
    assert two_slots.claim(wait_s=5) is not None, "two slots hold two jobs"


def test_a_long_poll_in_flight_at_revocation_gets_no_job(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    waiting = farmhand_in_lane()
    answer: dict[str, httpx.Response] = {}
    poll = threading.Thread(
        target=lambda: answer.setdefault("r", waiting.claim_response(wait_s=10))
    )
    poll.start()
    time.sleep(1.0)  # the claim is waiting on the board
    with shared_board.admin() as admin:
        assert admin.delete(f"{API}/tokens/{waiting.name}").status_code == 204
    job = _queued_job(submitter, media_dir)
    poll.join(15)
    assert not poll.is_alive()
    assert answer["r"].status_code in (401, 403), answer["r"].text
    assert submitter.job(job)["state"] == "queued"


def test_a_revoked_tokens_event_stream_closes_within_a_heartbeat_interval(
    shared_board, submitter, media_dir
):
    job = _queued_job(submitter, media_dir)  # no farmhand in this lane: it stays queued
    heartbeat_s = 10.0  # BOARD_HEARTBEAT_S's default, what the shared board runs with
    ended = threading.Event()
    events: list[str] = []

    def follow() -> None:
        with httpx.stream(
            "GET",
            f"{shared_board.url}{API}/jobs/{job}/events",
            headers={"Authorization": f"Bearer {submitter.token}"},
            timeout=60,
        ) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data:"):
                    events.append(line)
        ended.set()

    stream = threading.Thread(target=follow, daemon=True)
    stream.start()
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events, "the stream sent nothing"
    assert not ended.wait(1.0), "the stream ended by itself"
    with shared_board.admin() as admin:
        assert admin.delete(f"{API}/tokens/{submitter.name}").status_code == 204
    revoked_at = time.monotonic()
    assert ended.wait(heartbeat_s), "the stream outlived its revoked token"
    assert time.monotonic() - revoked_at < heartbeat_s
