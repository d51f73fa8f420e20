"""Who gets which job: exactly-once claims under concurrency, matching by verified encoders, the
GPU grace period, and the long-poll that hands an idle farmhand new work at once."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.board.actors import (
    API,
    CPU_ALL,
    CPU_H264,
    GPU_ALL,
    GPU_H264,
    Farmhand,
    Submitter,
    board_tracebacks,
)
from tests.board.conftest import board_with

# A board of its own: which GPU farmhands are online is farm-wide, and the grace is short.
matching_board = board_with({"BOARD_GPU_GRACE_S": "1"})


@pytest.mark.slow
def test_200_jobs_32_claimers_each_job_claimed_exactly_once(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    clip = submitter.upload(media_dir / "a.mp4")
    body = submitter.body(submitter.compilation(clip["id"]))
    r = submitter.http.post(f"{API}/jobs/batch", json={"jobs": [body] * 200})
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 200
    submitted = {item["job"]["id"] for item in r.json()["items"]}
    assert len(submitted) == 200

    farmhands = [farmhand_in_lane(slots=64) for _ in range(32)]  # each may hold many
    start = threading.Barrier(32)

    def claim_until_empty(farmhand: Farmhand) -> list[str]:
        got: list[str] = []
        start.wait()
        while (lease := farmhand.claim(wait_s=0.2)) is not None:
            got.append(lease.job_id)
        return got

    with ThreadPoolExecutor(32) as pool:
        per_claimer = list(pool.map(claim_until_empty, farmhands))
    claimed = Counter(job_id for got in per_claimer for job_id in got)
    assert set(claimed) == submitted, "some jobs were left behind"
    assert max(claimed.values()) == 1, "a job was handed out twice"
    assert sum(1 for got in per_claimer if got) > 8, "the claim loops should share the work"

    r = submitter.http.get(f"{API}/jobs", params={"state": "queued"})
    assert r.json()["total"] == 0
    r = submitter.http.get(f"{API}/jobs", params={"state": "claimed", "limit": 500})
    page = r.json()
    assert page["total"] == 200
    assert {j["attempts"] for j in page["items"]} == {1}

    assert board_tracebacks(shared_board) == []


def test_a_new_farmhand_may_say_hello_from_several_connections_at_once(
    shared_board, farmhand_in_lane
):
    """Its status report and first claims race to create its row: none of them may fail."""
    farmhands = [farmhand_in_lane() for _ in range(6)]
    start = threading.Barrier(18)

    def hello(call) -> int:
        start.wait()
        return call().status_code

    calls = [f.report_status for f in farmhands] + [f.claim_response for f in farmhands] * 2
    with ThreadPoolExecutor(18) as pool:
        codes = list(pool.map(hello, calls))
    assert set(codes) <= {200, 204}, codes
    assert board_tracebacks(shared_board) == []


def test_idle_claimer_gets_a_new_job_within_100_ms(submitter, farmhand_in_lane, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    compilation = submitter.compilation(clip["id"])
    farmhand = farmhand_in_lane(slots=8)  # it keeps every job it claims here
    submitter.submit_ok(compilation, priority=1)  # warm up both paths once
    farmhand.claim_ok()

    latencies = []
    for _ in range(5):
        got: dict = {}

        def wait_for_work(got=got) -> None:
            got["lease"] = farmhand.claim(wait_s=10)
            got["at"] = time.monotonic()

        waiter = threading.Thread(target=wait_for_work)
        waiter.start()
        time.sleep(0.2)  # the claimer is now idle, long-polling
        submitted_at = time.monotonic()
        job = submitter.submit_ok(compilation)
        waiter.join(15)
        assert got["lease"] is not None and got["lease"].job_id == job["id"]
        latencies.append(got["at"] - submitted_at)
    assert statistics.median(latencies) < 0.1, f"pickup latencies {latencies}"


def test_long_poll_answers_204_after_wait_s_when_there_is_no_work(farmhand_in_lane):
    farmhand = farmhand_in_lane()
    began = time.monotonic()
    r = farmhand.claim_response(wait_s=0.6)
    assert r.status_code == 204
    assert time.monotonic() - began >= 0.55


def test_a_job_whose_claim_answer_never_arrived_goes_back_at_the_next_claim(
    submitter, farmhand_in_lane, media_dir
):
    """A farmhand lists what it holds in every claim; a job it was handed but does not list (the
    answer was lost on the way) is put back in the queue by that claim's check-in, and the same
    claim may take it again, under a new lease."""
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    farmhand = farmhand_in_lane()
    lost = farmhand.claim_ok()
    farmhand.holding.discard(lost.job_id)  # as if the answer never arrived

    again = farmhand.claim_ok()
    assert again.job_id == job["id"]
    assert again.token != lost.token
    assert lost.heartbeat().status_code == 409  # the lost answer's lease is dead
    assert again.heartbeat().status_code == 200
    events = submitter.history(job["id"])["events"]
    assert [e["to_state"] for e in events] == ["queued", "claimed", "queued", "claimed", "running"]
    assert "never reached the farmhand" in events[2]["message"]
    assert submitter.job(job["id"])["attempts"] == 1  # the lost attempt is not counted


def test_highest_priority_then_oldest_is_claimed_first(submitter, farmhand_in_lane, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    c = submitter.compilation(clip["id"])
    low = submitter.submit_ok(c, priority=-5)
    old = submitter.submit_ok(c, priority=3)
    new = submitter.submit_ok(c, priority=3)
    top = submitter.submit_ok(c, priority=9)
    farmhand = farmhand_in_lane(slots=4)
    order = [farmhand.claim_ok().job_id for _ in range(4)]
    assert order == [top["id"], old["id"], new["id"], low["id"]]


def test_a_farmhand_finds_its_job_behind_many_it_cannot_take(
    submitter, farmhand_in_lane, media_dir
):
    """The oldest jobs need a tag this farmhand lacks; the one it can do is far down the queue."""
    clip = submitter.upload(media_dir / "a.mp4")
    body = submitter.body(submitter.compilation(clip["id"]), requirements={"tags": ["studio"]})
    r = submitter.http.post(f"{API}/jobs/batch", json={"jobs": [body] * 40})
    assert r.json()["created"] == 40
    mine = submitter.submit_ok(submitter.compilation(clip["id"]), priority=-1)
    assert farmhand_in_lane().claim_ok().job_id == mine["id"]


def test_gpu_hevc_job_is_never_given_without_a_verified_hardware_hevc_encoder(
    matching_board, lane, media_dir
):
    submitter = Submitter(matching_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    hevc = submitter.compilation(clip["id"], output={"codec": "hevc"})
    job = submitter.submit_ok(hevc, requirements={"encoder": "gpu"})
    assert job["requirements"] == {
        "codec": "hevc",
        "encoder": "gpu",
        "tags": [lane],
        "min_gpu_memory_mb": 0,
    }
    cpu = Farmhand(matching_board, lane=lane, encoders=CPU_ALL)  # libx265: software HEVC only
    h264_gpu = Farmhand(matching_board, lane=lane, encoders=GPU_H264, gpu_memory_mb=8000)
    unknown = Farmhand(
        matching_board, lane=lane, encoders=("hevc_magic", "libx265")
    )  # not in our table
    for farmhand in (cpu, h264_gpu, unknown, cpu, h264_gpu):
        assert farmhand.claim() is None, f"{farmhand.capabilities['encoders']} got a gpu job"
    gpu = Farmhand(matching_board, lane=lane, encoders=GPU_ALL, gpu_memory_mb=8000)
    assert gpu.claim_ok().job_id == job["id"]


def test_gpu_memory_and_tags_are_required(matching_board, lane, media_dir):
    submitter = Submitter(matching_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    c = submitter.compilation(clip["id"])
    job = submitter.submit_ok(c, requirements={"encoder": "gpu", "min_gpu_memory_mb": 12000,
                                               "tags": ["studio"]})  # fmt: skip
    small = Farmhand(matching_board, lane=lane, encoders=GPU_ALL, gpu_memory_mb=8000)
    small.capabilities["tags"] = ["studio", lane]
    untagged = Farmhand(matching_board, lane=lane, encoders=GPU_ALL, gpu_memory_mb=16000)
    assert small.claim() is None and untagged.claim() is None
    big = Farmhand(matching_board, lane=lane, encoders=GPU_ALL, gpu_memory_mb=16000)
    big.capabilities["tags"] = ["studio", "fast", lane]
    assert big.claim_ok().job_id == job["id"]


def test_any_job_goes_to_a_gpu_farmhand_first_and_to_a_cpu_one_after_the_grace(
    matching_board, lane, media_dir
):
    submitter = Submitter(matching_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    c = submitter.compilation(clip["id"])
    gpu = Farmhand(matching_board, lane=lane, encoders=GPU_ALL, gpu_memory_mb=8000)
    cpu = Farmhand(matching_board, lane=lane, encoders=CPU_H264)
    assert gpu.report_status().status_code == 200  # a capable GPU farmhand is online
    assert cpu.report_status().status_code == 200

    first = submitter.submit_ok(c)  # encoder: any
    assert cpu.claim() is None, "a CPU farmhand took an `any` job while a GPU one is online"
    assert gpu.claim_ok().job_id == first["id"]

    # The GPU farmhand is busy now; after the grace the CPU farmhand may take the next one.
    queued_at = time.monotonic()
    second = submitter.submit_ok(c)
    assert cpu.claim() is None
    lease = cpu.claim(wait_s=5)
    assert lease is not None and lease.job_id == second["id"]
    assert time.monotonic() - queued_at >= 0.9  # BOARD_GPU_GRACE_S


def test_any_job_goes_to_a_cpu_farmhand_at_once_when_no_gpu_can_take_it(
    matching_board, lane, media_dir
):
    submitter = Submitter(matching_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    av1 = submitter.compilation(clip["id"], output={"codec": "av1"})
    job = submitter.submit_ok(av1)  # no farmhand of this board has hardware AV1
    assert Farmhand(matching_board, lane=lane, encoders=CPU_ALL).claim_ok().job_id == job["id"]


def test_cpu_job_is_not_given_to_a_hardware_only_farmhand(matching_board, lane, media_dir):
    submitter = Submitter(matching_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]), requirements={"encoder": "cpu"})
    assert (
        Farmhand(matching_board, lane=lane, encoders=("h264_nvenc",), gpu_memory_mb=8000).claim()
        is None
    )
    assert Farmhand(matching_board, lane=lane, encoders=CPU_H264).claim_ok().job_id == job["id"]
