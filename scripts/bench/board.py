"""Claim throughput: N concurrent claimers over HTTP doing claim → finish cycles against a real
board process, on SQLite and PostgreSQL, side by side in one run.

    python scripts/bench/board.py [--claimers 64] [--jobs 3000] [--engines sqlite,postgres]
                                  [--finish fail|complete]

``--finish fail`` ends each cycle with a permanent failure report (the state machine's cost:
claim, fence, finalize, events); ``--finish complete`` uploads a tiny verified mp4 and completes
(the whole hand-in path a farmhand takes). Prints cycles/s, p50/p99 latency per call, and double
claims (must be 0) and jobs left behind (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from farmproc import CAPS, BenchBoard, tiny_mp4
from loadgen import Connection, Latencies, timed


def submit(board: BenchBoard, token: str, n: int) -> None:
    with httpx.Client(
        base_url=board.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as c:
        for start in range(0, n, 500):
            jobs = [
                {
                    "compilation": {
                        "title": f"bench {i}",
                        "clips": [{"url": f"https://example.com/{i}.mp4"}],
                    }
                }
                for i in range(start, min(n, start + 500))
            ]
            r = c.post("/api/v1/jobs/batch", json={"jobs": jobs})
            r.raise_for_status()


async def claimer(board, token, i, lat, claims, finish, output, stop_at):
    conn = Connection(board.url, token)
    done = 0
    sha = hashlib.sha256(output).hexdigest() if output else ""
    while time.monotonic() < stop_at:
        r = await timed(
            lat,
            "claim",
            conn.request(
                "POST",
                "/api/v1/farmhand/claim",
                json_body={"farmhand": f"bench-{i}", "capabilities": CAPS, "wait_s": 0},
            ),
        )
        if r.status == 204:
            break
        assert r.status == 200, (r.status, r.body[:300])
        claim = r.json()
        job, lease = claim["job_id"], claim["lease_token"]
        claims[job] += 1
        if finish == "fail":
            r = await timed(
                lat,
                "fail",
                conn.request(
                    "POST",
                    f"/api/v1/farmhand/jobs/{job}/fail",
                    json_body={"lease_token": lease, "error": "bench", "retryable": False},
                ),
            )
        else:
            r = await timed(
                lat,
                "upload",
                conn.request(
                    "PUT",
                    f"/api/v1/farmhand/jobs/{job}/output",
                    body=output,
                    headers={
                        "X-Lease-Token": lease,
                        "X-Upload-Sha256": sha,
                        "X-Upload-Size": str(len(output)),
                    },
                ),
            )
            assert r.status == 200, (r.status, r.body[:300])
            r = await timed(
                lat,
                "complete",
                conn.request(
                    "POST",
                    f"/api/v1/farmhand/jobs/{job}/complete",
                    json_body={"lease_token": lease},
                ),
            )
        assert r.status == 200, (r.status, r.body[:300])
        done += 1
    await conn.close()
    return done


async def run_load(board, token, claimers, finish, output, seconds):
    lat = Latencies()
    claims: Counter = Counter()
    stop_at = time.monotonic() + seconds
    started = time.perf_counter()
    done = await asyncio.gather(
        *(claimer(board, token, i, lat, claims, finish, output, stop_at) for i in range(claimers))
    )
    elapsed = time.perf_counter() - started
    return sum(done), elapsed, lat, claims


def bench(engine: str, workers: int, args, output: bytes | None) -> dict:
    board = BenchBoard(engine, workers=workers)
    try:
        sub, fh = board.token("submitter", "bench"), board.token("farmhand", "bench-fh")
        submit(board, sub, args.jobs)
        procs = board.processes()
        for proc in procs:
            proc.cpu_percent()
        me = psutil.Process()
        me.cpu_percent()
        cycles, elapsed, lat, claims = asyncio.run(
            run_load(board, fh, args.claimers, args.finish, output, args.seconds)
        )
        cpu = sum(proc.cpu_percent() for proc in procs) / 100
        generator_cpu = me.cpu_percent() / 100
        rss = sum(proc.memory_info().rss for proc in procs) / 2**20
        with httpx.Client(base_url=board.url, headers={"Authorization": f"Bearer {sub}"}) as c:
            left = c.get(
                "/api/v1/jobs", params={"state": ["queued", "claimed", "running"], "limit": 1}
            ).json()["total"]
        calls = [n for n in ("claim", "fail", "upload", "complete") if n in lat.samples]
        return {
            "engine": engine if workers == 1 else f"{engine} ×{workers}",
            "cycles": cycles,
            "elapsed": elapsed,
            "rate": cycles / elapsed,
            "double": sum(1 for n in claims.values() if n > 1),
            "left": left if cycles >= args.jobs else f"{left} (time limit)",
            "lat": {n: (lat.pct(n, 50) * 1000, lat.pct(n, 99) * 1000) for n in calls},
            "board_cpu": cpu,
            "generator_cpu": generator_cpu,
            "board_rss_mb": rss,
        }
    finally:
        board.close()


async def _health_load(url: str, clients: int, seconds: float) -> tuple[int, float]:
    async def one() -> int:
        conn, n = Connection(url), 0
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            r = await conn.request("GET", "/health")
            assert r.status == 200, r.status
            n += 1
        await conn.close()
        return n

    started = time.perf_counter()
    done = await asyncio.gather(*(one() for _ in range(clients)))
    return sum(done), time.perf_counter() - started


def http_floor(clients: int, seconds: float = 10.0) -> float:
    """Requests/s the same board process and load generator manage on ``GET /health``: no
    token, no database. What any route costs at least, measured beside the cycles."""
    board = BenchBoard("sqlite")
    try:
        requests, elapsed = asyncio.run(_health_load(board.url, clients, seconds))
    finally:
        board.close()
    return requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claimers", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument(
        "--workers", default="1,2", help="board processes (board serve --workers), each measured"
    )
    parser.add_argument("--finish", choices=["fail", "complete"], default="complete")
    args = parser.parse_args()
    output = tiny_mp4() if args.finish == "complete" else None
    print(
        f"# {args.claimers} claimers, {args.jobs} jobs, cycle = claim → "
        f"{'upload + complete' if args.finish == 'complete' else 'fail'}; "
        f"{psutil.cpu_count()} cores shared by board and load generator"
    )
    floor = http_floor(args.claimers)
    calls = 2 if args.finish == "fail" else 3
    print(f"http floor  {floor:7.0f} requests/s on GET /health ({args.claimers} clients): at most "
          f"{floor / calls:.0f} cycles/s of {calls} requests even if they did no work")  # fmt: skip
    runs = [(e, int(w)) for e in args.engines.split(",") for w in args.workers.split(",")]
    for engine, workers in runs:
        r = bench(engine, workers, args, output)
        lat = "  ".join(
            f"{n} p50 {p50:.1f} ms p99 {p99:.1f} ms" for n, (p50, p99) in r["lat"].items()
        )
        print(
            f"{r['engine']:11s} {r['rate']:7.0f} cycles/s  ({r['cycles']} in {r['elapsed']:.1f} s)  "
            f"double claims {r['double']}  left behind {r['left']}  board CPU "
            f"{r['board_cpu']:.2f} cores, RSS {r['board_rss_mb']:.0f} MB, load generator "
            f"{r['generator_cpu']:.2f} cores\n            {lat}\n"
            f"            {r['rate'] * calls / floor:.0%} of the http floor's requests/s"
        )


if __name__ == "__main__":
    main()
