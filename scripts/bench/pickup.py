"""Pickup latency: idle farmhands long-polling a real board; how long from a submit until one of
them holds the job. SQLite and PostgreSQL side by side in one run.

    python scripts/bench/pickup.py [--idle 16] [--jobs 200] [--engines sqlite,postgres]

Each submit is timed from just before the request is sent to the moment a claimer has the claim
answer in hand (both in this process, one clock). After a claim the farmhand reports the job
failed (permanent) and long-polls again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from farmproc import CAPS, BenchBoard
from loadgen import Connection


async def idle_farmhand(url, token, name, claimed: dict, stop: asyncio.Event):
    conn = Connection(url, token)
    while not stop.is_set():
        r = await conn.request(
            "POST",
            "/api/v1/farmhand/claim",
            json_body={"farmhand": name, "capabilities": CAPS, "wait_s": 5},
        )
        if r.status == 204:
            continue
        got = time.perf_counter()
        claim = r.json()
        claimed[claim["job_id"]] = got
        await conn.request(
            "POST",
            f"/api/v1/farmhand/jobs/{claim['job_id']}/fail",
            json_body={"lease_token": claim["lease_token"], "error": "bench", "retryable": False},
        )
    await conn.close()


def run(engine: str, idle: int, jobs: int, workers: int = 1) -> list[float]:
    board = BenchBoard(engine, workers=workers)
    try:
        return asyncio.run(measure(board, idle, jobs))
    finally:
        board.close()


async def measure(board: BenchBoard, idle: int, jobs: int) -> list[float]:
    sub = board.token("submitter", "bench")
    hands = [board.token("farmhand", f"idle-{i}") for i in range(idle)]
    claimed: dict[str, float] = {}
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(idle_farmhand(board.url, t, f"idle-{i}", claimed, stop))
        for i, t in enumerate(hands)
    ]
    await asyncio.sleep(2)  # every farmhand is now waiting in a long-poll
    submitter = Connection(board.url, sub)
    sent: dict[str, float] = {}
    for i in range(jobs):
        started = time.perf_counter()
        r = await submitter.request(
            "POST",
            "/api/v1/jobs",
            json_body={
                "compilation": {
                    "title": f"pickup {i}",
                    "clips": [{"url": f"https://example.com/{i}.mp4"}],
                }
            },
        )
        sent[r.json()["id"]] = started
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)  # the last claims come in
    stop.set()
    await asyncio.gather(*tasks)
    await submitter.close()
    return sorted(claimed[j] - sent[j] for j in sent if j in claimed)


def pct(sorted_s: list[float], q: float) -> float:
    return sorted_s[min(len(sorted_s) - 1, int(q / 100 * len(sorted_s)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument(
        "--workers", default="1,2", help="board processes (board serve --workers), each measured"
    )
    args = parser.parse_args()
    print(f"# {args.idle} idle farmhands long-polling; {args.jobs} jobs submitted one by one")
    for engine in args.engines.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            lat = run(engine, args.idle, args.jobs, workers)
            name = engine if workers == 1 else f"{engine} ×{workers}"
            print(
                f"{name:11s} submit → claimed: p50 {pct(lat, 50):.1f} ms  p99 {pct(lat, 99):.1f} ms"
                f"  max {lat[-1] * 1000:.1f} ms  ({len(lat)} of {args.jobs} picked up)"
            )


if __name__ == "__main__":
    main()
