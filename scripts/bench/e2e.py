"""A real farm rendering a compilation against the same render run directly, with the board's
media and outputs in its own folder and in S3-compatible storage, side by side.

    python scripts/bench/e2e.py [--height 720] [--reps 3] [--media DIR] [--storage local|s3|both]

The farm is what a user runs: a ``board serve`` on its embedded SQLite and one ``farmhand run``,
both real processes talking HTTP on this machine. The media are uploaded once beforehand (that
is the submitter's cost, not the farm's). Each farm run starts a fresh farmhand with an empty
media cache and waits until it is online and idle; the clock then runs from ``POST
/api/v1/jobs`` until the job reads ``succeeded``: claim, fetching every source from the board,
the render, the upload of the output and its thumbnail, ``complete``. The direct run is
``timeline.render.render`` on the local files with the same settings the farmhand uses
(``parallel=2``, libx264, ``nice``). The two alternate, ``--reps`` times; medians and their
ratio are printed, and the farm's time is split into its stages from the job's events.

The compilation is the mixed one of ``render.py`` (12 inputs of differing size, fps, SAR,
rotation, pixel format, audio; blur fit, transitions, titles, watermark, music).

With ``s3`` the board keeps its files in a bucket of moto's S3 server (``moto_server``, started
here on 127.0.0.1): the media are uploaded to it on presigned URLs, the farmhand fetches them
from it and sends its output there. The board's CPU time per farm job (its process, from submit
to ``succeeded``) is printed for each storage: what serving and receiving the bytes costs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from farmproc import BenchBoard
from render import (
    DEFAULT_MEDIA,
    MIXED,
    Stopwatch,
    load,
    machine,
    make_media,
    mixed_compilation,
)

from submitter.board_client import BoardClient
from tests.harness import RunningFarmhand, free_port
from timeline.render import render
from wire import FINAL_STATES, routes


class MotoServer:
    """moto's S3 server on a free port of 127.0.0.1, with one bucket."""

    def __init__(self, log: Path) -> None:
        import boto3

        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
             "-p", self.url.rsplit(":", 1)[1]],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(300):
            try:
                httpx.get(self.url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        self.bucket = "clipfarm-bench"
        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench",
                     ).create_bucket(Bucket=self.bucket)  # fmt: skip

    def board_env(self) -> dict[str, str]:
        return {"BOARD_STORAGE": "s3", "BOARD_S3_ENDPOINT": self.url,
                "BOARD_S3_BUCKET": self.bucket, "BOARD_S3_ACCESS_KEY": "bench",
                "BOARD_S3_SECRET_KEY": "bench"}  # fmt: skip

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Farm:
    """A board and, one at a time, a farmhand."""

    def __init__(self, work: Path, env: dict[str, str] | None = None) -> None:
        self.work = work
        self.board = BenchBoard("sqlite", env=env)
        self.submitter = self.board.token("submitter", "bench-submitter")
        self.hand_token = self.board.token("farmhand", "bench-farmhand")
        self.hand: RunningFarmhand | None = None
        self.runs = 0

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def upload(self, raw: dict, media: Path) -> dict:
        """``raw`` with every local path replaced by the board media id of its upload (as
        ``clipfarm-submit`` uploads: to the board, or straight to its object storage)."""
        ids: dict[str, str] = {}
        client = BoardClient(self.board.url, self.submitter)

        def swap(source: dict) -> dict:
            path = source.pop("path")
            if path not in ids:
                file = media / path
                ids[path] = client.upload_media(file, size=file.stat().st_size)[0].id
            return {**source, "media": ids[path]}

        out = dict(raw)
        for key in ("intro", "outro", "watermark", "music"):
            if key in out:
                out[key] = swap(dict(out[key]))
        out["clips"] = [swap(dict(clip)) for clip in raw["clips"]]
        return out

    def start_farmhand(self) -> None:
        """A new farmhand with an empty cache; returns once the board lists it online."""
        self.stop_farmhand()
        self.runs += 1
        self.hand = RunningFarmhand(
            self.board, self.work / f"farmhand-{self.runs}", "bench-farmhand",
            token=self.hand_token, env={"FARMHAND_SLOTS": "1", "FARMHAND_WAIT_S": "20"},
        ).start()  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.hand.proc.poll() is not None:
                raise RuntimeError(f"the farmhand exited; see {self.hand.log_path}")
            r = httpx.get(f"{self.board.url}{routes.FARMHANDS}",
                          headers=self.headers(self.board.admin_token), timeout=10)  # fmt: skip
            if any(f.get("online") and f.get("name") == "bench-farmhand" for f in r.json()):
                time.sleep(1.0)  # its first long-poll is open
                return
            time.sleep(0.2)
        raise RuntimeError("the farmhand did not come online within 120 s")

    def stop_farmhand(self) -> None:
        if self.hand is not None:
            self.hand.stop()
        self.hand = None

    def board_cpu_s(self) -> float:
        """CPU seconds the board's processes used so far."""
        return sum(sum(p.cpu_times()[:2]) for p in self.board.processes())

    def run_job(self, compilation: dict) -> tuple[float, dict[str, float]]:
        """Submit, wait for ``succeeded``; the wall time and the seconds between the job's
        events (queued → claimed → ... → succeeded), with the board's CPU seconds."""
        headers = self.headers(self.submitter)
        cpu_before = self.board_cpu_s()
        start = time.perf_counter()
        r = httpx.post(f"{self.board.url}{routes.JOBS}", json={"compilation": compilation},
                       headers=headers, timeout=30)  # fmt: skip
        r.raise_for_status()
        job_id = r.json()["id"]
        # the job's event stream (SSE) says when it changes: no polling load on the board
        job: dict = {}
        url = self.board.url + routes.path(routes.JOB_EVENTS, job_id=job_id)
        with httpx.stream("GET", url, headers=headers, timeout=None) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    job = json.loads(line[6:])
                    if job["state"] in FINAL_STATES:
                        break
        wall = time.perf_counter() - start
        if job.get("state") != "succeeded":
            raise RuntimeError(f"the farm's job ended {job.get('state')}: {job.get('error')}")
        stages = self.stages(job)
        stages["board cpu"] = self.board_cpu_s() - cpu_before
        return wall, stages

    def stages(self, job: dict) -> dict[str, float]:
        """Where the farm's time went: queued (submit until claimed), the render itself (as the
        farmhand logged it) and the rest on the farmhand (fetch, verify, upload, complete)."""
        at = {k: datetime.fromisoformat(job[k]) for k in ("created_at", "claimed_at",
                                                          "finished_at")}  # fmt: skip
        held = (at["finished_at"] - at["claimed_at"]).total_seconds()
        found: list[str] = []
        deadline = time.monotonic() + 10  # it logs once the board has answered its complete
        while not found and time.monotonic() < deadline:
            found = re.findall(r"\): done in ([0-9.]+) s", self.hand.log())
            time.sleep(0.05)
        render_s = float(found[-1]) if found else float("nan")
        return {"queued": (at["claimed_at"] - at["created_at"]).total_seconds(),
                "render": render_s, "fetch+upload+rest": held - render_s}  # fmt: skip

    def close(self) -> None:
        self.stop_farmhand()
        self.board.close()


def measure(storage: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """``--reps`` farm runs against as many direct runs, alternating; their medians."""
    raw = mixed_compilation(args.height)
    compilation, sources = load(raw, args.media)
    store = MotoServer(work / "moto.log") if storage == "s3" else None
    farm = Farm(work / storage, store.board_env() if store else None)
    farm_s: list[float] = []
    direct_s: list[float] = []
    cpu_s: list[float] = []
    print(f"## storage: {storage}", flush=True)
    try:
        on_board = farm.upload(raw, args.media)
        for rep in range(args.reps):
            farm.start_farmhand()
            order = ("farm", "direct") if rep % 2 == 0 else ("direct", "farm")
            for step in order:
                if step == "farm":
                    wall, stages = farm.run_job(on_board)
                    farm_s.append(wall)
                    cpu_s.append(stages.pop("board cpu"))
                else:
                    out = work / f"direct-{storage}-{rep}"
                    out.mkdir()
                    with Stopwatch() as watch:
                        render(compilation, sources, out / "out.mp4", parallel=2,
                               thumbnail=out / "thumb.jpg", nice=True)  # fmt: skip
                    direct_s.append(watch.timing.wall)
                    shutil.rmtree(out)
            farm.stop_farmhand()
            shown = "  ".join(f"{k} {v:.2f}" for k, v in stages.items())
            print(f"  rep {rep + 1}: farm {farm_s[-1]:.2f} s  direct {direct_s[-1]:.2f} s"
                  f"  ratio {farm_s[-1] / direct_s[-1]:.3f}  board cpu {cpu_s[-1]:.3f} s"
                  f"  [{shown}]", flush=True)  # fmt: skip
    finally:
        farm.close()
        if store is not None:
            store.close()
    f, d = statistics.median(farm_s), statistics.median(direct_s)
    return {"farm": f, "direct": d, "ratio": f / d, "board_cpu": statistics.median(cpu_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA)
    parser.add_argument("--storage", choices=("local", "s3", "both"), default="both")
    args = parser.parse_args()
    print(f"# {machine()}", flush=True)
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    make_media(args.media, MIXED)
    work = Path(tempfile.mkdtemp(prefix="clipfarm-bench-e2e-"))
    storages = ("local", "s3") if args.storage == "both" else (args.storage,)
    try:
        results = {storage: measure(storage, args, work) for storage in storages}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.height}p mixed compilation, median of {args.reps}:")
    for storage, r in results.items():
        print(f"  {storage:5}  farm {r['farm']:.2f} s  direct {r['direct']:.2f} s  "
              f"farm/direct {r['ratio']:.3f}  board cpu per job {r['board_cpu']:.3f} s")  # fmt: skip
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
