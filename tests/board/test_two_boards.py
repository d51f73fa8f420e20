"""Several board processes on one database (board hosts scaled out on PostgreSQL, or a board
and its `board` commands on SQLite): every job is done once, and a job submitted through one
board reaches a farmhand long-polling another within the reaper's nudge."""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from board.spawn import BoardProcess
from tests.board.actors import API, Farmhand, Submitter, new_lane
from tests.harness import RunningBoard, require_pg

URL_CLIP = {"clips": [{"url": "https://example.com/clip.mp4"}]}
WAIT_S = 20


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def two_boards(request, tmp_path_factory) -> Iterator[tuple[RunningBoard, BoardProcess]]:
    """Two ``board serve`` processes on one database and one data directory."""
    if request.param == "postgres":
        require_pg()
    env = {"BOARD_REAP_INTERVAL_S": "0.5"}
    first = RunningBoard(tmp_path_factory.mktemp("two-boards"), request.param, env=env).start()
    second = BoardProcess(first.env, first.data_dir / "second-board.log")  # same database
    second.admin_token = first.admin_token
    second.start()
    yield first, second
    second.stop()
    first.close()


def _submit(submitter: Submitter, n: int) -> list[str]:
    jobs = [submitter.body({"title": f"t{i}", **URL_CLIP}) for i in range(n)]
    r = submitter.http.post(f"{API}/jobs/batch", json={"jobs": jobs})
    assert r.status_code == 200, r.text
    return [item["job"]["id"] for item in r.json()["items"]]


def test_a_job_submitted_to_one_board_reaches_a_claimer_waiting_on_the_other(two_boards):
    first, second = two_boards
    lane = new_lane()
    submitter = Submitter(first, lane=lane)
    waiting = Farmhand(second, lane=lane)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            claim = pool.submit(waiting.claim_response, WAIT_S)
            time.sleep(0.5)  # it waits on the second board
            submitted_at = time.monotonic()
            (job,) = _submit(submitter, 1)
            answer = claim.result(timeout=WAIT_S + 10)
        assert answer.status_code == 200 and answer.json()["job_id"] == job, answer.text
        # woken by the second board's nudge, long before its wait ran out
        assert time.monotonic() - submitted_at < WAIT_S / 2
    finally:
        waiting.close()
        submitter.close()


def test_every_job_is_done_once_across_boards(two_boards, rendered):
    first, second = two_boards
    lane = new_lane()
    submitter = Submitter(first, lane=lane)
    farmhands = [Farmhand(board, lane=lane) for board in (first, second) * 3]
    submitted = _submit(submitter, 30)
    taken: Counter = Counter()

    def work(fh: Farmhand) -> None:
        while (lease := fh.claim(wait_s=0.5)) is not None:
            taken[lease.job_id] += 1
            lease.finish(rendered)

    try:
        with concurrent.futures.ThreadPoolExecutor(len(farmhands)) as pool:
            for done in [pool.submit(work, fh) for fh in farmhands]:
                done.result(timeout=120)
        assert sorted(taken) == sorted(submitted)
        assert set(taken.values()) == {1}, "a job was handed out twice"
        states = Counter(submitter.job(job_id)["state"] for job_id in submitted)
        assert states == {"succeeded": len(submitted)}
    finally:
        for fh in farmhands:
            fh.close()
        submitter.close()
