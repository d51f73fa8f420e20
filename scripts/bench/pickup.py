"""Pickup latency: idle farmhands long-polling a real board; how long from a submit until one of
them holds the job. SQLite and PostgreSQL side by side in one run.

    python scripts/bench/pickup.py [--idle 16] [--jobs 200] [--engines sqlite,postgres]

Each idle farmhand is the real farmhand's client (``farmhand.client.BoardClient``) with a
token of its own. Each submit is timed from just before the request is sent to the moment a
claimer has the claim answer in hand (both in this process, one clock). After a claim the
farmhand reports the job failed (permanent) and long-polls again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from farmproc import CAPS, BenchBoard
from latency import Latencies

from farmhand.client import BoardClient
from wire import Fail, routes

PICKUP = "submit → claimed"


async def idle_farmhand(client: BoardClient, claimed: dict, stop: asyncio.Event):
    """The real farmhand's client, long-polling; each job it gets is failed (permanent)."""
    while not stop.is_set():
        claim = await client.claim(CAPS, wait_s=5, running=[])
        if claim is None:
            continue
        claimed[claim.job_id] = time.perf_counter()
        failure = Fail(lease_token=claim.lease_token, error="bench", retryable=False)
        await client.fail(claim.job_id, failure, deadline_s=10)


def run(engine: str, idle: int, jobs: int) -> Latencies:
    board = BenchBoard(engine)
    try:
        return asyncio.run(measure(board, idle, jobs))
    finally:
        board.close()


async def measure(board: BenchBoard, idle: int, jobs: int) -> Latencies:
    hands = [
        BoardClient(board.url, board.token("farmhand", f"idle-{i}"), name=f"idle-{i}")
        for i in range(idle)
    ]
    claimed: dict[str, float] = {}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(idle_farmhand(hand, claimed, stop)) for hand in hands]
    await asyncio.sleep(2)  # every farmhand is now waiting in a long-poll
    headers = {"Authorization": f"Bearer {board.token('submitter', 'bench')}"}
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=board.url, headers=headers) as submitter:
        for i in range(jobs):
            started = time.perf_counter()
            body = {"compilation": {"title": f"pickup {i}",
                                    "clips": [{"url": f"https://example.com/{i}.mp4"}]}}  # fmt: skip
            r = await submitter.post(routes.JOBS, json=body)
            sent[r.raise_for_status().json()["id"]] = started
            await asyncio.sleep(0.05)
    await asyncio.sleep(1)  # the last claims come in
    stop.set()
    await asyncio.gather(*tasks)
    for hand in hands:
        await hand.aclose()
    lat = Latencies()
    for job_id, started in sent.items():
        if job_id in claimed:
            lat.add(PICKUP, claimed[job_id] - started)
    return lat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--engines", default="sqlite,postgres")
    args = parser.parse_args()
    print(f"# {args.idle} idle farmhands long-polling; {args.jobs} jobs submitted one by one")
    for engine in args.engines.split(","):
        lat = run(engine, args.idle, args.jobs)
        print(
            f"{engine:11s} {PICKUP}: p50 {lat.pct(PICKUP, 50) * 1000:.1f} ms  "
            f"p99 {lat.pct(PICKUP, 99) * 1000:.1f} ms  max {lat.pct(PICKUP, 100) * 1000:.1f} "
            f"ms  ({lat.count(PICKUP)} of {args.jobs} picked up)"
        )


if __name__ == "__main__":
    main()
