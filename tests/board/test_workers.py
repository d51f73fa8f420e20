"""``board serve --workers 2``: two board processes on one port, one database.

The reaper's nudge (which finds work no wake-up announced) runs only every 30 s here, so a
long-polling claimer on the worker that did not take the submit can only be woken in time by
the other worker's relayed wake-up (``board.siblings``).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter

import psutil
import pytest

from tests.board.actors import API, Farmhand, Submitter, new_lane, wait_until
from tests.board.conftest import board_with

workers_board = board_with({"BOARD_WORKERS": "2", "BOARD_REAP_INTERVAL_S": "30"})
WAIT_S = 25
URL_CLIP = {"clips": [{"url": "https://example.com/clip.mp4"}]}


def _workers(board) -> list[psutil.Process]:
    found = psutil.Process(board.proc.pid).children(recursive=True)
    serving = [p for p in found if any(c.laddr.port == board.port for c in _tcp(p))]
    return serving


def _tcp(process: psutil.Process) -> list:
    try:
        return process.net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return []


def _open_by_worker(board) -> Counter:
    """Established connections to the board, by worker pid."""
    return Counter(
        {
            p.pid: sum(
                1
                for c in _tcp(p)
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == board.port
            )
            for p in _workers(board)
        }
    )


def _submit(submitter: Submitter, n: int) -> list[str]:
    jobs = [submitter.body({"title": f"w{i}", **URL_CLIP}) for i in range(n)]
    r = submitter.http.post(f"{API}/jobs/batch", json={"jobs": jobs})
    assert r.status_code in (200, 201), r.text
    return [item["job"]["id"] for item in r.json()["items"]]


def test_two_workers_serve_one_port(workers_board):
    wait_until(lambda: len(_workers(workers_board)) == 2, timeout=20, what="two worker processes")


def test_a_submit_to_one_worker_wakes_claimers_waiting_on_the_other(workers_board):
    lane = new_lane()
    submitter = Submitter(workers_board, lane=lane)
    waiting: list[Farmhand] = []
    pool = concurrent.futures.ThreadPoolExecutor(40)
    claims = []
    try:
        # Long-poll from new connections until both workers hold some of them.
        while len(waiting) < 40:
            for _ in range(4):
                fh = Farmhand(workers_board, lane=lane)
                waiting.append(fh)
                claims.append(pool.submit(fh.claim_response, WAIT_S))
            wait_until(
                lambda: sum(_open_by_worker(workers_board).values()) >= len(waiting),
                timeout=10,
                what="every claimer's connection open",
            )
            spread = _open_by_worker(workers_board)
            if len(spread) == 2 and min(spread.values()) >= 1:
                break
        assert len(_open_by_worker(workers_board)) == 2, "every connection went to one worker"
        submitted_at = time.monotonic()
        submitted = _submit(submitter, len(waiting))
        answers = [claim.result(timeout=40) for claim in claims]
        # Each claim came back long before its 25 s wait ran out: it was woken. Without the
        # relay the claimers on the other worker sleep out their wait (and then find the jobs
        # still there): this bound tells woken from timed out, however slow the machine.
        late = time.monotonic() - submitted_at
        assert late < WAIT_S - 10, f"the last claim came {late:.1f} s after the submit"
        assert [r.status_code for r in answers] == [200] * len(waiting), [
            (r.status_code, r.text[:100]) for r in answers
        ]
        assert sorted(r.json()["job_id"] for r in answers) == sorted(submitted)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for fh in waiting:
            fh.close()
        submitter.close()


def test_every_job_is_done_once_across_workers(workers_board, rendered):
    lane = new_lane()
    submitter = Submitter(workers_board, lane=lane)
    farmhands = [Farmhand(workers_board, lane=lane) for _ in range(6)]
    submitted = _submit(submitter, 30)
    taken: Counter = Counter()

    def work(fh: Farmhand) -> None:
        while (lease := fh.claim()) is not None:
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


@pytest.mark.parametrize("workers", ["0", "65", "two"])
def test_a_worker_count_out_of_range_is_refused(workers_board, workers):
    with pytest.raises(RuntimeError, match="workers"):
        workers_board.cli("serve", "--workers", workers, "--port", "1")
