"""A simulated fleet against a real board: N farmhands, a bulk submitter and a dashboard client.

    python scripts/bench/fleet.py [--farmhands 2000] [--seconds 120] [--job-s 30]
                                  [--heartbeat-s 10] [--engine sqlite]
                                  [--board-src DIR]

Each simulated farmhand is the real farmhand's client, ``farmhand.client.BoardClient``, with a
farmhand token of its own (identity is the token) and a keep-alive connection pool of its own:
it announces itself (``status``), long-polls ``claim``, reads the job's ``context``, heartbeats
every ``--heartbeat-s`` while it "renders" (sleeps) for ``--job-s``, uploads a tiny real mp4
resumably to the context's ``output_url`` and completes. Farmhands start spread over one job's
length, so their jobs end spread out too. A bulk submitter keeps about one job per two
farmhands queued (batches of 200) and a dashboard client follows the live event stream.
Everything runs on one (uvloop) event loop in this process.

Printed per board: p50/p99 per route (until the answer's headers, as this process saw them: the
"simulator loop lag" row says how much of that was this process being busy), jobs lost and done
twice (both must be 0), the board's CPU and peak RSS, and the board's CPU per job cycle (claim,
context, heartbeats, upload, complete, and the job's share of the submitter's and dashboard's
calls) as a multiple of its CPU per ``GET /health``, measured in the same run: an idle pause
(the board's own background work, subtracted from both), then ``--health`` calls of
``GET /health`` four at a time, then the fleet.

``--board-src DIR`` runs the same fleet first against the board of another checkout (``git
worktree add /tmp/before 3258d3f``; it runs on this venv with ``PYTHONPATH=DIR``) and then
against this one, and prints the two side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import random
import re
import ssl
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from farmproc import CAPS, BenchBoard, tiny_mp4
from latency import Latencies

from farmhand.client import CONNECTION_LIMITS, BoardClient
from wire import JOB_STATES, Complete, Fail, Heartbeat, JobPage, routes
from wire.client import call_async
from wire.errors import BoardError, LeaseLost

HEALTH_CONCURRENCY = 4
LOOP_TICK_S = 0.01
LOOP_LAG = "(simulator loop lag)"
IDLE_S = 3.0
BATCH = 200
DASHBOARD_EVENTS = "/dashboard/events?view=jobs"  # the dashboard's live stream (not wire API)

# the routes a fleet calls, by method and wire.routes template
ROUTE_NAMES = {
    ("POST", routes.FARMHAND_STATUS): "status",
    ("POST", routes.CLAIM): "claim",
    ("GET", routes.JOB_CONTEXT): "context",
    ("POST", routes.JOB_HEARTBEAT): "heartbeat",
    ("GET", routes.JOB_UPLOAD): "upload status",
    ("PUT", routes.JOB_UPLOAD): "upload",
    ("POST", routes.JOB_COMPLETE): "complete",
    ("POST", routes.JOB_FAIL): "fail",
    ("GET", routes.JOBS): "jobs list",
    ("POST", routes.JOBS_BATCH): "batch submit",
    ("GET", "/dashboard/events"): "dashboard connect",
    ("GET", routes.HEALTH): "health",
}
ROUTE_ORDER = list(dict.fromkeys(ROUTE_NAMES.values()))
_PATTERNS = [
    (method, re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"), name)
    for (method, template), name in ROUTE_NAMES.items()
]


def route_name(request: httpx.Request, status: int) -> str:
    """The fleet's name for a request; a long-poll that found no job is apart (it waited)."""
    for method, pattern, name in _PATTERNS:
        if request.method == method and pattern.match(request.url.path):
            return "claim (no job)" if name == "claim" and status == 204 else name
    return f"{request.method} {request.url.path}"


class TimedTransport(httpx.AsyncBaseTransport):
    """One simulated client's own keep-alive connection pool, as a real farmhand has, timing
    each request by route until its answer's headers. Every pool shares one SSL context: loading
    the certificates again for each of thousands of clients would swamp the simulator."""

    tls = ssl.create_default_context()

    def __init__(self, latencies: Latencies, errors: Counter) -> None:
        self.latencies = latencies
        self.errors = errors
        self.pool = httpx.AsyncHTTPTransport(verify=self.tls, limits=CONNECTION_LIMITS)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = await self.pool.handle_async_request(request)
        name = route_name(request, response.status_code)
        self.latencies.add(name, time.perf_counter() - started)
        if response.status_code >= 400:
            self.errors[f"{name} {response.status_code}"] += 1
        return response

    async def aclose(self) -> None:
        await self.pool.aclose()


def board_cpu_s(board: BenchBoard) -> float:
    """CPU seconds (user + system) the board's processes have used so far."""
    total = 0.0
    for proc in board.processes():
        times = proc.cpu_times()
        total += times.user + times.system
    return total


@dataclass
class Result:
    """What one board did under the fleet."""

    label: str
    latencies: Latencies
    claims: Counter = field(default_factory=Counter)
    completed: Counter = field(default_factory=Counter)
    failed: set = field(default_factory=set)
    errors: Counter = field(default_factory=Counter)
    submitted: int = 0
    dashboard_events: int = 0
    states: dict[str, int] = field(default_factory=dict)
    idle_cpu_per_s: float = 0.0
    health_cpu_s: float = 0.0
    fleet_cpu_s: float = 0.0
    fleet_wall_s: float = 0.0
    peak_rss: int = 0
    simulator_cpu_s: float = 0.0

    @property
    def double_claims(self) -> int:
        return sum(1 for n in self.claims.values() if n > 1)

    @property
    def done_twice(self) -> int:
        return sum(1 for n in self.completed.values() if n > 1)

    @property
    def lost(self) -> int:
        """Jobs a farmhand claimed and neither completed nor reported failed, plus completed
        ones the board does not count as succeeded, plus jobs still held when all stopped."""
        dropped = len(set(self.claims) - set(self.completed) - self.failed)
        unrecorded = max(0, len(self.completed) - self.states.get("succeeded", 0))
        held = self.states.get("claimed", 0) + self.states.get("running", 0)
        return dropped + unrecorded + held

    @property
    def cycle_cpu_s(self) -> float:
        """Board CPU per completed job, its idle background work taken out."""
        busy = self.fleet_cpu_s - self.idle_cpu_per_s * self.fleet_wall_s
        return busy / max(1, sum(self.completed.values()))


class Fleet:
    """The simulated farmhands, submitter and dashboard against one board."""

    def __init__(self, board: BenchBoard, args: argparse.Namespace, result: Result) -> None:
        self.board = board
        self.args = args
        self.result = result
        self.stopping = asyncio.Event()
        self.output = Path(tempfile.mkdtemp(prefix="clipfarm-fleet-")) / "output.mp4"
        self.output.write_bytes(tiny_mp4())
        self.sha256 = hashlib.sha256(self.output.read_bytes()).hexdigest()

    def timed(self) -> TimedTransport:
        return TimedTransport(self.result.latencies, self.result.errors)

    def client(self, token: str | None) -> httpx.AsyncClient:
        """A plain client (submitter, dashboard, /health) with a timed pool of its own."""
        return httpx.AsyncClient(
            base_url=self.board.url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            transport=self.timed(),
            timeout=httpx.Timeout(60.0, connect=10.0),
        )

    # ------------------------------------------------------------ a farmhand

    async def farmhand(self, hand: BoardClient, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            await hand.status(paused=False, reason="", capabilities=CAPS)
            while not self.stopping.is_set():
                try:
                    claim = await hand.claim(CAPS, wait_s=self.args.wait_s, running=[])
                except BoardError as exc:
                    self.result.errors[f"claim: {type(exc).__name__}"] += 1
                    await asyncio.sleep(1)
                    continue
                if claim is not None:
                    self.result.claims[claim.job_id] += 1
                    await self.render(hand, claim.job_id, claim.lease_token)
        finally:
            await hand.aclose()

    async def render(self, hand: BoardClient, job_id: str, lease: str) -> None:
        """The job's steps as ``farmhand.runner`` takes them, with a sleep for the render: a
        heartbeat not delivered is counted and the "render" goes on; a lost lease ends it."""
        args = self.args
        beats = max(1, round(args.job_s / args.heartbeat_s))
        try:
            context = await hand.context(job_id, lease)
            for beat in range(beats):
                progress = Heartbeat(lease_token=lease, progress=beat / beats)
                try:
                    await hand.heartbeat(job_id, progress, deadline_s=args.heartbeat_s)
                except LeaseLost:
                    raise
                except BoardError as exc:
                    self.result.errors[f"heartbeat: {type(exc).__name__}"] += 1
                await asyncio.sleep(args.job_s / beats * random.uniform(0.9, 1.1))
            await hand.upload_output(
                job_id, lease, self.output, sha256=self.sha256, url=context.output_url,
                deadline_s=60,
            )  # fmt: skip
            await hand.complete(job_id, Complete(lease_token=lease), deadline_s=60)
            self.result.completed[job_id] += 1
        except LeaseLost:  # the board gave the job to another: nothing more is said about it
            self.result.errors["lease lost"] += 1
        except BoardError as exc:  # reported as a retryable failure, as the runner would
            self.result.errors[f"job: {type(exc).__name__} {exc.status}"] += 1
            failure = Fail(lease_token=lease, error=str(exc)[:500], retryable=True)
            with contextlib.suppress(BoardError):
                await hand.fail(job_id, failure, deadline_s=30)
                self.result.failed.add(job_id)

    # ------------------------------------------------------------ submitter and dashboard

    async def submitter(self, token: str) -> None:
        """Keep about one job per two farmhands queued, in batches of 200."""
        async with self.client(token) as http:
            while not self.stopping.is_set():
                answer = await call_async(
                    lambda: http.get(routes.JOBS, params={"state": "queued", "limit": 1}),
                    "count queued jobs",
                    deadline_s=30,
                )
                queued = msgspec.json.decode(answer.content, type=JobPage).total
                want = self.args.farmhands // 2 - queued
                while want > 0 and not self.stopping.is_set():
                    count = min(BATCH, want)
                    jobs = [self.job(self.result.submitted + i) for i in range(count)]
                    await call_async(
                        lambda jobs=jobs: http.post(routes.JOBS_BATCH, json={"jobs": jobs}),
                        "batch submit",
                        deadline_s=60,
                    )
                    self.result.submitted += count
                    want -= count
                await self.sleep(2.0)

    @staticmethod
    def job(n: int) -> dict:
        return {"compilation": {"title": f"fleet {n}",
                                "clips": [{"url": f"https://example.com/{n}.mp4"}]}}  # fmt: skip

    async def dashboard(self, token: str) -> None:
        """Follow the dashboard's live stream; the gap between its messages is timed."""
        async with self.client(token) as http:
            async with http.stream("GET", DASHBOARD_EVENTS, timeout=None) as stream:
                last = time.perf_counter()
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        now = time.perf_counter()
                        self.result.latencies.add("dashboard stream gap", now - last)
                        self.result.dashboard_events += 1
                        last = now

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # ------------------------------------------------------------ the phases

    async def measure_health(self) -> None:
        """``GET /health`` ``--health`` times, four at a time, on an otherwise idle board."""
        async with self.client(None) as http:
            started_cpu, started = board_cpu_s(self.board), time.monotonic()
            await asyncio.sleep(IDLE_S)
            idle_cpu = board_cpu_s(self.board) - started_cpu
            self.result.idle_cpu_per_s = idle_cpu / (time.monotonic() - started)

            async def caller(n: int) -> None:
                for _ in range(n):
                    (await http.get(routes.HEALTH)).raise_for_status()

            per_caller = self.args.health // HEALTH_CONCURRENCY
            started_cpu, started = board_cpu_s(self.board), time.monotonic()
            await asyncio.gather(*(caller(per_caller) for _ in range(HEALTH_CONCURRENCY)))
            spent = board_cpu_s(self.board) - started_cpu
            spent -= self.result.idle_cpu_per_s * (time.monotonic() - started)
            self.result.health_cpu_s = spent / (per_caller * HEALTH_CONCURRENCY)

    async def run(self, tokens: list[tuple[str, str]], submitter: str) -> None:
        """The fleet for ``--seconds``, then until every farmhand has handed its job in."""
        args = self.args
        started_cpu, started = board_cpu_s(self.board), time.monotonic()
        watchers = [
            asyncio.create_task(self.watch_memory()),
            asyncio.create_task(self.watch_loop()),
        ]
        submitting = asyncio.create_task(self.submitter(submitter))
        await asyncio.sleep(1)  # a first batch is queued
        dashboard = asyncio.create_task(self.dashboard(self.board.admin_token))
        clients = [
            BoardClient(self.board.url, token, name=name, transport=self.timed())
            for name, token in tokens
        ]
        # what lives the whole run stays out of the collector's full passes: scanning
        # thousands of clients at each one would stall this loop, and every route's timing
        gc.collect()
        gc.freeze()
        hands = [
            asyncio.create_task(self.farmhand(hand, i * args.ramp_s / len(clients)))
            for i, hand in enumerate(clients)
        ]
        await asyncio.sleep(args.seconds)
        self.stopping.set()
        # each farmhand finishes its job; one in a long-poll may still get one and render it
        await asyncio.wait([*hands, submitting], timeout=args.wait_s + args.job_s + 60)
        self.result.fleet_wall_s = time.monotonic() - started
        self.result.fleet_cpu_s = board_cpu_s(self.board) - started_cpu
        for task in (*hands, submitting, dashboard, *watchers):
            task.cancel()
        await asyncio.gather(*hands, submitting, dashboard, *watchers, return_exceptions=True)

    async def watch_memory(self) -> None:
        while True:
            rss = sum(p.memory_info().rss for p in self.board.processes())
            self.result.peak_rss = max(self.result.peak_rss, rss)
            await asyncio.sleep(1)

    async def watch_loop(self) -> None:
        """How late this process's event loop wakes up: the part of a route's time that is
        the simulator's own (a busy loop reads answers late), not the board's."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LOOP_TICK_S)
            self.result.latencies.add(LOOP_LAG, time.perf_counter() - started - LOOP_TICK_S)

    async def count_states(self) -> None:
        """How many jobs the board has in each state (not timed)."""
        headers = {"Authorization": f"Bearer {self.board.admin_token}"}
        async with httpx.AsyncClient(base_url=self.board.url, headers=headers) as http:
            for state in JOB_STATES:
                answer = await http.get(routes.JOBS, params={"state": state, "limit": 1})
                self.result.states[state] = answer.raise_for_status().json()["total"]


def run_board(label: str, args: argparse.Namespace, source: Path | None) -> Result:
    """One board, started afresh: the idle and /health phases, then the fleet."""
    settings = {"BOARD_LEASE_S": "60", "BOARD_HEARTBEAT_S": str(args.heartbeat_s)}
    board = BenchBoard(args.engine, env=settings, source=source)
    result = Result(label, Latencies())
    me = psutil.Process()
    try:
        names = [f"sim-{i:05d}" for i in range(args.farmhands)]
        tokens = list(zip(names, board.issue_tokens("farmhand", names), strict=True))
        submitter = board.token("submitter", "fleet-submitter")

        async def phases() -> None:
            fleet = Fleet(board, args, result)
            await fleet.measure_health()
            cpu = me.cpu_times()
            await fleet.run(tokens, submitter)
            now = me.cpu_times()
            result.simulator_cpu_s = now.user + now.system - cpu.user - cpu.system
            await fleet.count_states()

        # uvloop (a board dependency): less simulator CPU per request, more left to the board
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(phases())
    except BaseException:
        print(f"--- {label} board log:\n{board.log_tail()}", file=sys.stderr)
        raise
    finally:
        board.close()
    return result


def report(results: list[Result], args: argparse.Namespace) -> None:
    """The runs side by side: p50 / p99 in ms per route, then the fleet's totals."""
    print(
        f"# {args.farmhands} farmhands, {args.job_s:g} s jobs, heartbeat every "
        f"{args.heartbeat_s:g} s, {args.seconds:g} s on {args.engine}; "
        f"{psutil.cpu_count()} cores shared with the simulator"
    )
    width = max(18, *(len(r.label) for r in results))
    print(f"{'route (p50 / p99 ms)':24s}" + "".join(f"{r.label:>{width}s}" for r in results))
    names = [n for n in ROUTE_ORDER if any(r.latencies.count(n) for r in results)]
    extra = sorted({n for r in results for n in r.latencies.samples} - set(names))
    for name in names + extra:
        cells = "".join(f"{r.latencies.ms(name):>{width}s}" for r in results)
        print(f"{name:24s}{cells}   n={'/'.join(str(r.latencies.count(name)) for r in results)}")

    def row(title: str, value) -> None:
        print(f"{title:24s}" + "".join(f"{value(r):>{width}}" for r in results))

    row("jobs submitted", lambda r: r.submitted)
    row("jobs completed", lambda r: sum(r.completed.values()))
    row("lost", lambda r: r.lost)
    row("done twice", lambda r: r.done_twice)
    row("claimed twice", lambda r: r.double_claims)
    row("board CPU (cores)", lambda r: f"{r.fleet_cpu_s / r.fleet_wall_s:.2f}")
    row("board peak RSS (MB)", lambda r: f"{r.peak_rss / 2**20:.0f}")
    row("board idle (ms CPU/s)", lambda r: f"{r.idle_cpu_per_s * 1000:.1f}")
    row("GET /health (ms CPU)", lambda r: f"{r.health_cpu_s * 1000:.3f}")
    row("job cycle (ms CPU)", lambda r: f"{r.cycle_cpu_s * 1000:.2f}")
    row("cycle / health", lambda r: f"{r.cycle_cpu_s / r.health_cpu_s:.1f}x")
    row("simulator CPU (cores)", lambda r: f"{r.simulator_cpu_s / r.fleet_wall_s:.2f}")
    row("dashboard messages", lambda r: r.dashboard_events)
    for r in results:
        states = ", ".join(f"{s} {n}" for s, n in r.states.items() if n)
        print(f"{r.label}: board states {states}; errors {dict(r.errors) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--farmhands", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the fleet runs")
    parser.add_argument("--job-s", type=float, default=30.0)
    parser.add_argument("--heartbeat-s", type=float, default=10.0)
    parser.add_argument("--wait-s", type=float, default=20.0, help="claim long-poll")
    parser.add_argument(
        "--ramp-s",
        type=float,
        help="farmhands start over this long (default: one job's length, so that their jobs "
        "stay spread out instead of ending in waves)",
    )
    parser.add_argument("--health", type=int, default=2000, help="GET /health calls measured")
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument(
        "--board-src",
        type=Path,
        help="also run the board of this checkout (e.g. a git worktree of the code before a "
        "change), first, and print both side by side",
    )
    args = parser.parse_args()
    args.ramp_s = args.job_s if args.ramp_s is None else args.ramp_s
    results = []
    if args.board_src is not None:
        results.append(run_board(f"{args.board_src.name} (src)", args, args.board_src))
    results.append(run_board("this checkout", args, None))
    report(results, args)


if __name__ == "__main__":
    main()
