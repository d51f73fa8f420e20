"""Leases and the state machine: expiry, fencing of zombies, stalls, cancel, retries with
backoff, max attempts, quarantine, release — and the clean-up of what dead leases uploaded."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from tests.board.actors import (
    API,
    Farmhand,
    Submitter,
    board_tracebacks,
    farmhand_view,
    sha256_of,
    wait_until,
)
from tests.board.conftest import board_with
from tests.harness import RunningBoard

# Short leases (2 s), quick reaping and stall detection (1.5 s), a janitor that sweeps often.
lease_board = board_with(
    {
        "BOARD_LEASE_S": "2",
        "BOARD_HEARTBEAT_S": "0.5",
        "BOARD_STALL_S": "1.5",
        "BOARD_REAP_INTERVAL_S": "0.2",
        "BOARD_JANITOR_INTERVAL_S": "0.3",
        "BOARD_RETRY_BASE_S": "0.3",
        "BOARD_GPU_GRACE_S": "0",
    }
)


def _job_state(submitter: Submitter, job_id: str, state: str) -> dict:
    return wait_until(
        lambda: (job := submitter.job(job_id))["state"] == state and job,
        timeout=10,
        what=f"job {job_id} to become {state}",
    )


def _files_of(board: RunningBoard, job_id: str) -> list[str]:
    root = board.data_dir / "files"
    found = [p for p in (root / "outputs" / job_id).glob("*")] + [
        p for p in (root / "uploads").glob(f"{job_id}.*")
    ]
    return sorted(str(p.relative_to(root)) for p in found)


def test_expired_lease_is_requeued_and_the_zombie_is_refused(lease_board, lane, media_dir):
    submitter = Submitter(lease_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    zombie, healthy = Farmhand(lease_board, lane=lane), Farmhand(lease_board, lane=lane)

    lost = zombie.claim_ok()
    assert lost.heartbeat(0.4).status_code == 200
    zombie_render = (media_dir / "b.mp4").read_bytes()
    assert lost.heartbeat(0.97, stage="uploading").status_code == 200
    assert lost.upload(zombie_render).json()["complete"]  # uploaded, but never completed
    # ... and then the zombie goes silent: no heartbeat for longer than the lease.
    requeued = _job_state(submitter, job["id"], "queued")
    assert requeued["attempts"] == 1 and "lease expired" in requeued["error"]
    assert lost.heartbeat(0.5).status_code == 409

    lease = healthy.claim_ok()
    assert lease.job_id == job["id"]
    assert lease.context().json()["attempt"] == 2
    rendered = (media_dir / "a.mp4").read_bytes()
    lease.finish(rendered)

    for refused in (
        lost.heartbeat(0.9),
        lost.upload(zombie_render),
        lost.upload_status(),
        lost.context(),
        lost.complete(),
        lost.fail("too late"),
        lost.release(),
    ):
        assert refused.status_code == 409, refused.text
        assert "no longer valid" in refused.json()["detail"]
    r = submitter.http.get(f"{API}/jobs/{job['id']}/output")
    assert r.status_code == 200 and r.content == rendered
    done = submitter.job(job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert done["output"]["sha256"] == sha256_of(rendered)

    attempts = submitter.history(job["id"])["attempts"]
    assert [(a["farmhand"], a["outcome"]) for a in attempts] == [
        (zombie.name, "lost"),
        (healthy.name, "succeeded"),
    ]
    assert farmhand_view(lease_board, zombie.name)["consecutive_failures"] == 1

    # The janitor removes the zombie's staged upload; the committed output stays.
    wait_until(lambda: len(_files_of(lease_board, job["id"])) == 2, what="the zombie's files to go")
    remaining = _files_of(lease_board, job["id"])  # the output and its checksum note
    assert all(name.startswith(f"outputs/{job['id']}/") for name in remaining), remaining
    assert submitter.http.get(f"{API}/jobs/{job['id']}/output").content == rendered
    assert board_tracebacks(lease_board) == []


def test_job_out_of_attempts_fails_when_its_lease_expires(lease_board, lane, media_dir):
    submitter = Submitter(lease_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]), max_attempts=1)
    lease = Farmhand(lease_board, lane=lane).claim_ok()
    assert lease.heartbeat(0.1).status_code == 200
    failed = _job_state(submitter, job["id"], "failed")
    assert failed["error"].startswith("gave up after 1 attempts")


def test_partial_upload_of_a_dead_lease_is_cleaned_up(lease_board, lane, media_dir):
    submitter = Submitter(lease_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    lease = Farmhand(lease_board, lane=lane).claim_ok()
    data = (media_dir / "a.mp4").read_bytes()
    half = len(data) // 2
    headers = lease.upload_headers(data, **{"Content-Range": f"bytes 0-{half - 1}/{len(data)}"})
    r = lease.farmhand.http.put(
        f"{API}/farmhand/jobs/{job['id']}/output", content=data[:half], headers=headers
    )
    assert r.status_code == 200 and r.json()["received"] == half
    assert _files_of(lease_board, job["id"])  # the part is kept while the lease lives
    _job_state(submitter, job["id"], "queued")  # lease expired
    wait_until(lambda: _files_of(lease_board, job["id"]) == [], what="the dead part to go")


def test_stalled_render_is_requeued_and_its_heartbeat_refused(lease_board, lane, media_dir):
    submitter = Submitter(lease_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    lease = Farmhand(lease_board, lane=lane).claim_ok()

    # Advancing progress keeps it running past the stall time...
    began = time.monotonic()
    progress = 0.0
    while time.monotonic() - began < 2.2:  # longer than BOARD_STALL_S
        progress += 0.02
        assert lease.heartbeat(progress).status_code == 200
        time.sleep(0.25)
    assert submitter.job(job["id"])["state"] == "running"

    # ... a hung ffmpeg keeps heartbeating the same progress: that is a stall.
    def refused() -> bool:
        r = lease.heartbeat(progress)
        assert r.status_code in (200, 409), r.text
        time.sleep(0.25)
        return r.status_code == 409

    wait_until(refused, timeout=8, what="the stalled lease to be refused")
    requeued = submitter.job(job["id"])
    assert requeued["state"] == "queued" and requeued["error"].startswith("stalled")
    assert submitter.history(job["id"])["attempts"][0]["outcome"] == "stalled"


def test_a_slow_upload_is_not_a_stall(lease_board, lane, media_dir):
    """Uploading a big output over a slow link reports no render progress for a long time; it
    is not a hung ffmpeg. The lease is still watched."""
    submitter = Submitter(lease_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    lease = Farmhand(lease_board, lane=lane).claim_ok()
    assert lease.heartbeat(0.95, stage="rendering").status_code == 200
    began = time.monotonic()
    while time.monotonic() - began < 2.2:  # longer than BOARD_STALL_S
        assert lease.heartbeat(0.97, stage="uploading").status_code == 200
        time.sleep(0.25)
    assert submitter.job(job["id"])["state"] == "running"


def test_cancel_a_queued_job(shared_board, submitter, farmhand_in_lane, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    r = submitter.http.post(f"{API}/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert farmhand_in_lane().claim() is None
    again = submitter.http.post(f"{API}/jobs/{job['id']}/cancel")
    assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_cancel_a_running_job_tells_its_farmhand_and_fences_it(
    shared_board, submitter, farmhand_in_lane, media_dir, rendered
):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    lease = farmhand_in_lane().claim_ok()
    assert lease.heartbeat(0.3).json()["cancel"] is False
    r = submitter.http.post(f"{API}/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"

    beat = lease.heartbeat(0.4)
    assert beat.status_code == 200 and beat.json()["cancel"] is True
    for refused in (lease.upload(rendered), lease.complete(), lease.fail("x"), lease.context()):
        assert refused.status_code == 409, refused.text
    assert submitter.job(job["id"])["state"] == "cancelled"
    assert submitter.history(job["id"])["attempts"][0]["outcome"] == "cancelled"
    assert submitter.http.get(f"{API}/jobs/{job['id']}/output").status_code == 404

    # Cancelled jobs can be retried; finished ones cannot be cancelled.
    r = submitter.http.post(f"{API}/jobs/{job['id']}/retry")
    assert r.status_code == 200 and r.json()["state"] == "queued" and r.json()["attempts"] == 0
    farmhand_in_lane().claim_ok().finish(rendered)
    r = submitter.http.post(f"{API}/jobs/{job['id']}/cancel")
    assert r.status_code == 409 and "already succeeded" in r.json()["detail"]


def test_retryable_failure_comes_back_after_backoff(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    farmhand = farmhand_in_lane()
    lease = farmhand.claim_ok()
    failed_at = time.monotonic()
    r = lease.fail("network hiccup while fetching", retryable=True)
    assert r.status_code == 200 and r.json()["state"] == "queued"
    seen = submitter.job(job["id"])
    assert seen["state"] == "queued" and "network hiccup" in seen["error"]
    assert seen["not_before"] > seen["updated_at"]  # BOARD_RETRY_BASE_S 0.4 ± 20 %
    assert farmhand.claim() is None, "the job came back before its backoff"
    again = farmhand.claim(wait_s=5)  # alone in its lane: it may retry its own failure
    assert again is not None and again.job_id == job["id"]
    assert time.monotonic() - failed_at >= 0.3
    assert again.context().json()["attempt"] == 2


def test_permanent_failure_fails_at_once_with_its_message(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    farmhand = farmhand_in_lane()
    message = "clip 1 (https://example.com/x.mp4): unsupported URL"
    r = farmhand.claim_ok().fail(message, retryable=False)
    assert r.status_code == 200 and r.json()["state"] == "failed"
    failed = submitter.job(job["id"])
    assert failed["state"] == "failed" and failed["error"] == message
    assert failed["attempts"] == 1 and failed["finished_at"]
    assert farmhand_view(shared_board, farmhand.name)["consecutive_failures"] == 0


def test_max_attempts_is_honoured(shared_board, submitter, farmhand_in_lane, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]), max_attempts=2)
    farmhand = farmhand_in_lane()
    assert farmhand.claim_ok().fail("encoder error").json()["state"] == "queued"
    assert farmhand.claim_ok(wait_s=5).fail("encoder error").json()["state"] == "failed"
    failed = submitter.job(job["id"])
    assert failed["attempts"] == 2 and failed["error"] == "gave up after 2 attempts: encoder error"


def test_failed_farmhand_is_passed_over_while_another_can_take_the_job(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    first, second = farmhand_in_lane(), farmhand_in_lane()
    assert second.report_status().status_code == 200  # online, able, idle
    first.claim_ok().fail("GPU fell off the bus")
    time.sleep(0.6)  # past the backoff
    assert first.claim() is None, "the farmhand that failed got the job back"
    assert second.claim_ok().job_id == job["id"]


def test_failed_farmhand_gets_the_job_back_when_nobody_else_can_take_it(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]), requirements={"encoder": "cpu"})
    only = farmhand_in_lane()
    # Online, but unable: another lane's farmhand, and a hardware-only one of this lane.
    assert Farmhand(shared_board).report_status().status_code == 200
    hw_only = farmhand_in_lane(encoders=("h264_nvenc",), gpu_memory_mb=4000)
    assert hw_only.report_status().status_code == 200
    only.claim_ok().fail("out of disk")
    again = only.claim(wait_s=5)
    assert again is not None and again.job_id == job["id"]


def test_repeated_retryable_failures_quarantine_a_farmhand(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    clip = submitter.upload(media_dir / "a.mp4")
    c = submitter.compilation(clip["id"])
    jobs = [submitter.submit_ok(c) for _ in range(4)]
    broken, healthy = farmhand_in_lane(), farmhand_in_lane(slots=4)
    for n in range(3):  # BOARD_QUARANTINE_AFTER=3 on the shared board
        lease = broken.claim_ok()
        assert lease.fail(f"NVENC session failed ({n})").status_code == 200
    view = farmhand_view(shared_board, broken.name)
    assert view["state"] == "quarantined" and view["consecutive_failures"] == 3
    assert "NVENC session failed (2)" in view["reason"]

    assert broken.claim(wait_s=0.5) is None, "a quarantined farmhand got work"
    taken = {healthy.claim_ok(wait_s=5).job_id for _ in range(4)}
    assert taken == {j["id"] for j in jobs}

    with shared_board.admin() as admin:
        r = admin.post(f"{API}/farmhands/{broken.name}/resume")
        assert r.status_code == 200 and r.json()["state"] == "active"
        assert r.json()["consecutive_failures"] == 0


def test_release_requeues_at_once_without_counting_an_attempt(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]), max_attempts=1)
    leaving, staying = farmhand_in_lane(), farmhand_in_lane()
    lease = leaving.claim_ok()
    assert lease.heartbeat(0.6).status_code == 200
    r = lease.release("farmhand shutting down (SIGTERM)")
    assert r.status_code == 200 and r.json()["state"] == "queued"
    queued = submitter.job(job["id"])
    assert queued["state"] == "queued" and queued["attempts"] == 0 and queued["progress"] == 0
    taken = staying.claim_ok()  # at once, and its one attempt is still there
    assert taken.job_id == job["id"] and taken.context().json()["attempt"] == 1
    assert lease.heartbeat(0.7).status_code == 409
    assert farmhand_view(shared_board, leaving.name)["consecutive_failures"] == 0
    outcomes = [a["outcome"] for a in submitter.history(job["id"])["attempts"]]
    assert outcomes == ["released", None]


def test_cancel_racing_complete_is_one_or_the_other(
    shared_board, submitter, farmhand_in_lane, media_dir, rendered
):
    clip = submitter.upload(media_dir / "a.mp4")
    farmhand = farmhand_in_lane()
    for _ in range(4):
        job = submitter.submit_ok(submitter.compilation(clip["id"]))
        lease = farmhand.claim_ok()
        assert lease.heartbeat(0.9).status_code == 200
        assert lease.upload(rendered).json()["complete"]
        start = threading.Barrier(2)

        def at_once(call, start=start):
            start.wait()
            return call().status_code

        cancel = partial(submitter.http.post, f"{API}/jobs/{job['id']}/cancel")
        with ThreadPoolExecutor(2) as pool:
            completed, cancelled = pool.map(at_once, [lease.complete, cancel])
        final = submitter.job(job["id"])
        assert sorted([completed, cancelled]) == [200, 409], (completed, cancelled)
        assert final["state"] == ("succeeded" if completed == 200 else "cancelled")
        events = submitter.history(job["id"])["events"]
        assert events[-1]["to_state"] == final["state"]
        assert [e["to_state"] for e in events].count("cancelled") == (cancelled == 200)
