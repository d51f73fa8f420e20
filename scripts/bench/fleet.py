"""A simulated fleet against a real board: N farmhands long-polling, heartbeating while they
"render" (sleep) each job, uploading a tiny real mp4 and completing; a bulk submitter keeping the
queue fed; a dashboard client on the live event stream. Reports p50/p99 per route, jobs lost or
done twice (both must be 0), and the board's CPU and memory.

    python scripts/bench/fleet.py [--farmhands 2000] [--seconds 120] [--job-s 30]
                                  [--heartbeat-s 10] [--engine sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from farmproc import CAPS, BenchBoard, tiny_mp4
from loadgen import Connection, Latencies, timed


class Fleet:
    def __init__(self, board: BenchBoard, args) -> None:
        self.board = board
        self.args = args
        self.lat = Latencies()
        self.claims: Counter = Counter()
        self.completed: Counter = Counter()
        self.errors: Counter = Counter()
        self.stop = asyncio.Event()
        self.output = tiny_mp4()
        self.sha = hashlib.sha256(self.output).hexdigest()
        self.submitted = 0

    async def farmhand(self, token: str, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        conn = Connection(self.board.url, token)
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                r = await conn.request(
                    "POST",
                    "/api/v1/farmhand/claim",
                    json_body={"farmhand": name, "capabilities": CAPS, "wait_s": 20},
                )
                if r.status == 204:
                    continue
                if r.status != 200:
                    self.errors[f"claim {r.status}"] += 1
                    await asyncio.sleep(1)
                    continue
                self.lat.add("claim (job waiting)", time.perf_counter() - started)
                claim = r.json()
                job, lease = claim["job_id"], claim["lease_token"]
                self.claims[job] += 1
                try:
                    await self.render(conn, job, lease)
                except (ConnectionError, OSError) as exc:  # counted, and the farmhand goes on
                    self.errors[f"render {type(exc).__name__}"] += 1
        finally:
            await conn.close()

    async def render(self, conn: Connection, job: str, lease: str) -> None:
        args = self.args
        beats = max(1, int(args.job_s / args.heartbeat_s))
        for i in range(beats):
            r = await timed(
                self.lat,
                "heartbeat",
                conn.request(
                    "POST",
                    f"/api/v1/farmhand/jobs/{job}/heartbeat",
                    json_body={
                        "lease_token": lease,
                        "stage": "rendering",
                        "progress": (i + 1) / (beats + 1),
                    },
                ),
            )
            if r.status != 200:
                self.errors[f"heartbeat {r.status}"] += 1
                return
            await asyncio.sleep(args.heartbeat_s * random.uniform(0.9, 1.1))
        r = await timed(
            self.lat,
            "upload",
            conn.request(
                "PUT",
                f"/api/v1/farmhand/jobs/{job}/output",
                body=self.output,
                headers={
                    "X-Lease-Token": lease,
                    "X-Upload-Sha256": self.sha,
                    "X-Upload-Size": str(len(self.output)),
                },
            ),
        )
        if r.status != 200:
            self.errors[f"upload {r.status}"] += 1
            return
        r = await timed(
            self.lat,
            "complete",
            conn.request(
                "POST", f"/api/v1/farmhand/jobs/{job}/complete", json_body={"lease_token": lease}
            ),
        )
        if r.status == 200:
            self.completed[job] += 1
        else:
            self.errors[f"complete {r.status}"] += 1

    async def submitter(self, token: str) -> None:
        """Keep about one job per farmhand waiting, in batches of 200."""
        conn = Connection(self.board.url, token)
        while not self.stop.is_set():
            r = await timed(
                self.lat, "jobs list", conn.request("GET", "/api/v1/jobs?state=queued&limit=1")
            )
            queued = r.json()["total"]
            want = self.args.farmhands // 2 - queued
            while want > 0 and not self.stop.is_set():
                n = min(200, want)
                jobs = [
                    {
                        "compilation": {
                            "title": f"fleet {self.submitted + i}",
                            "clips": [{"url": f"https://example.com/{self.submitted + i}.mp4"}],
                        }
                    }
                    for i in range(n)
                ]
                r = await timed(
                    self.lat,
                    "batch submit",
                    conn.request("POST", "/api/v1/jobs/batch", json_body={"jobs": jobs}),
                )
                if r.status != 200:
                    self.errors[f"batch {r.status}"] += 1
                self.submitted += n
                want -= n
            await asyncio.sleep(2)
        await conn.close()

    async def dashboard(self, token: str) -> None:
        """Follow the dashboard's live stream, timing each update."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.board.port, limit=16 * 2**20
        )
        writer.write(
            (
                f"GET /dashboard/events?view=jobs HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        last = time.perf_counter()
        try:
            while not self.stop.is_set():
                try:
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                except TimeoutError:
                    continue
                if not line:
                    break
                if line.startswith(b"event:") or line.startswith(b"data:"):
                    now = time.perf_counter()
                    self.lat.add("dashboard stream gap", now - last)
                    last = now
        finally:
            writer.close()


async def run_fleet(board: BenchBoard, args) -> Fleet:
    fleet = Fleet(board, args)
    sub = board.token("submitter", "fleet-submitter")
    fh = board.token("farmhand", "fleet")
    admin = board.admin
    tasks = [asyncio.create_task(fleet.submitter(sub))]
    await asyncio.sleep(1)
    tasks += [
        asyncio.create_task(fleet.farmhand(fh, f"sim-{i:05d}", i * args.ramp_s / args.farmhands))
        for i in range(args.farmhands)
    ]
    tasks.append(asyncio.create_task(fleet.dashboard(admin)))
    await asyncio.sleep(args.seconds)
    fleet.stop.set()
    # let the farmhands finish the jobs they hold (a job takes job_s)
    await asyncio.wait(tasks, timeout=args.job_s + 30)
    return fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--farmhands", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--job-s", type=float, default=30.0)
    parser.add_argument("--heartbeat-s", type=float, default=10.0)
    parser.add_argument("--ramp-s", type=float, default=20.0, help="farmhands start over this long")
    parser.add_argument("--engine", default="sqlite")
    parser.add_argument("--workers", type=int, default=1, help="board serve --workers")
    args = parser.parse_args()
    board = BenchBoard(
        args.engine, env={"BOARD_LEASE_S": "60", "BOARD_HEARTBEAT_S": "10"}, workers=args.workers
    )
    try:
        procs = board.processes()
        for proc in procs:
            proc.cpu_percent()
        peak_rss = 0
        started = time.monotonic()

        async def watch():
            nonlocal peak_rss
            while True:
                peak_rss = max(peak_rss, sum(p.memory_info().rss for p in procs))
                await asyncio.sleep(1)

        async def both():
            watcher = asyncio.create_task(watch())
            try:
                return await run_fleet(board, args)
            finally:
                watcher.cancel()

        fleet = asyncio.run(both())
        elapsed = time.monotonic() - started
        cpu = sum(p.cpu_percent() for p in procs) / 100
        import httpx

        with httpx.Client(
            base_url=board.url, headers={"Authorization": f"Bearer {board.admin}"}, timeout=60
        ) as c:
            states = {
                s: c.get("/api/v1/jobs", params={"state": s, "limit": 1}).json()["total"]
                for s in ("queued", "claimed", "running", "succeeded", "failed")
            }
    finally:
        board.close()
    double = sum(1 for n in fleet.claims.values() if n > 1)
    twice_done = sum(1 for n in fleet.completed.values() if n > 1)
    # lost = a job some farmhand completed that the board does not count as succeeded, or one
    # the board shows as running with nobody holding it after the fleet stopped
    lost = len(fleet.completed) - states["succeeded"]
    print(
        f"# {args.farmhands} farmhands, {args.job_s:g} s jobs, heartbeat every "
        f"{args.heartbeat_s:g} s, {args.seconds:g} s on {args.engine}; "
        f"{psutil.cpu_count()} cores shared with the simulator"
    )
    print(
        f"jobs submitted {fleet.submitted}, claimed {len(fleet.claims)}, completed "
        f"{len(fleet.completed)}; board: {states}"
    )
    print(
        f"double claims {double}, completed twice {twice_done}, lost {lost}, "
        f"errors {dict(fleet.errors) or 'none'}"
    )
    for name in sorted(fleet.lat.samples):
        n = len(fleet.lat.samples[name])
        print(
            f"  {name:22s} n={n:6d}  p50 {fleet.lat.pct(name, 50) * 1000:7.1f} ms  "
            f"p99 {fleet.lat.pct(name, 99) * 1000:7.1f} ms"
        )
    print(f"board CPU {cpu:.2f} cores over {elapsed:.0f} s, peak RSS {peak_rss / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
