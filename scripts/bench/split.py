"""Split render: one compilation rendered by 1 renderer against N renderers, one core each.

    python scripts/bench/split.py [--height 720] [--reps 3] [--renderers 2] [--media DIR]

A *renderer* is a worker process pinned to one core (``os.sched_setaffinity``, which every
ffmpeg it starts inherits), standing for a farmhand: on this 2-core machine two of them fit
side by side. Renderers pull their work from one queue, as farmhands pull jobs from the board:

- ``whole``: one renderer renders the compilation with ``timeline.render.render``.
- ``split``: N renderers take the parts of ``timeline.split.split_plan`` (N parts, whether
  or not ``MIN_PART_WORK_S`` would split a job this small) and the audio track
  (biggest first: the sound goes to the first renderer done with its part); when all are in,
  the first free renderer joins them (``join_parts``). Every piece plans for itself, as a
  farmhand would.

Both are handed the sources' probes, as a board holding them from the uploads would hand them
out (``media=``): no renderer probes anything.

Both use the same encoder settings (libx264 at the compilation's quality, one segment encoding
at a time per renderer, hence one thread). They run side by side in alternating order, ``--reps``
times; the medians of wall time, their ratio (the speed-up), each piece's time, the model of
what N renderers would give, and the outputs' sizes and SSIM of the split output against the
whole one are printed. Wall time stretches with whatever else runs on the machine; a renderer
is one ffmpeg thread on its own core, so the CPU seconds along the longest renderer's path
(its pieces, then the join) are the wall time an idle machine would show, and are printed too.

The model (Amdahl's, from those CPU seconds): the whole render's time less the sound and the
join is the video work ``V``, which splits; each part adds a fixed cost ``o`` (its process, its plan, its
ffmpeg starts, one more decode of an xfade's head), measured as the parts' summed time less
``V``, per part; the sound (after a part, on one renderer) and the join do not split. So N
renderers take ``V/N + o + audio + join``. ``--farm`` runs the same job through a real farm instead: a board (``board serve``) and 1 against N
farmhand processes (``farmhand run``), farmhand k pinned to core k with every ffmpeg it starts; the
job is submitted with its media uploaded, and timed from the submit to its success. With one
farmhand it renders whole; with N waiting, the board splits it (``BOARD_SPLIT_MIN_WORK_S=0``: the
bench measures what splitting gives, whatever the job's size).

The compilation is the mixed one of ``render.py`` (its media are generated once into
``--media``, default /tmp/clipfarm-bench-media, and reused).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
import psutil
from render import DEFAULT_MEDIA, FFMPEG, MIXED, load, machine, make_media, mixed_compilation

from farmhand.config import beside_a_board_env
from timeline.plan import render_plan
from timeline.probe import MediaInfo
from timeline.render import probe_sources, render
from timeline.spec import Compilation
from timeline.split import (
    MIN_PART_WORK_S,
    Part,
    join_parts,
    render_audio,
    render_part,
    split_plan,
    work_s,
)
from wire import FINAL_STATES, routes


@dataclass
class Job:
    """What every setup renders: the compilation, its local files and their probes (which a
    board holds from the uploads and hands to whoever renders)."""

    compilation: Compilation
    sources: dict[str, Path]
    media: dict[str, MediaInfo]


@dataclass
class Piece:
    """One piece of work done by one renderer: its wall time and the CPU time (user + sys) of
    the ffmpegs it started."""

    wall: float
    cpu: float
    renderer: int


@dataclass
class Run:
    """One run of a setup: its wall time, its output, and each piece in it (by name)."""

    wall: float
    output: Path
    pieces: dict[str, Piece] = field(default_factory=dict)
    load: float = 0.0  # the machine's 1-minute load average when the run began

    @property
    def cpu(self) -> float:
        return sum(piece.cpu for piece in self.pieces.values())

    @property
    def path_cpu(self) -> float:
        """CPU seconds along the longest renderer's path: its pieces, then the join. A renderer
        has its core to itself on an idle machine, where this is the wall time; on a shared
        one, it is what other load cannot stretch."""
        join = self.pieces.get("join")
        per_renderer: dict[int, float] = {}
        for name, piece in self.pieces.items():
            if name != "join":
                per_renderer[piece.renderer] = per_renderer.get(piece.renderer, 0.0) + piece.cpu
        return max(per_renderer.values()) + (join.cpu if join else 0.0)


class Setup(Protocol):
    name: str

    def run(self, job: Job, work: Path) -> Run: ...


# ---------------------------------------------------------------- renderers: one core each


def _renderer(number: int, core: int, tasks, results) -> None:
    """Renderer ``number``'s loop: pinned to ``core``, run each task (a function and its
    arguments) until told to stop (None); report (name, ``Piece``, error or None)."""
    import resource

    os.sched_setaffinity(0, {core})
    while (task := tasks.get()) is not None:
        name, work, args = task
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        try:
            work(*args)
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        results.put((name, Piece(wall, cpu, number), error))


class Renderers:
    """``count`` renderer processes, renderer k pinned to core k (modulo the cores there are),
    started before any clock runs."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("fork")
        self.tasks, self.results = context.Queue(), context.Queue()
        cores = sorted(os.sched_getaffinity(0))
        self.processes = [
            context.Process(target=_renderer, args=(k, cores[k % len(cores)], self.tasks,
                                                    self.results), daemon=True)
            for k in range(count)
        ]  # fmt: skip
        for process in self.processes:
            process.start()

    def submit(self, name: str, work: Callable, *args) -> None:
        self.tasks.put((name, work, args))

    def collect(self, count: int) -> dict[str, Piece]:
        """Wait for ``count`` pieces, by name; raise on the first failure."""
        found = {}
        for _ in range(count):
            name, piece, error = self.results.get()
            if error is not None:
                raise RuntimeError(f"{name} failed: {error}")
            found[name] = piece
        return found

    def close(self) -> None:
        for _ in self.processes:
            self.tasks.put(None)
        for process in self.processes:
            process.join(timeout=30)


# ---------------------------------------------------------------- the setups


class Whole:
    """One renderer renders the whole compilation."""

    name = "whole"

    def run(self, job: Job, work: Path) -> Run:
        out = work / "whole.mp4"
        pool = Renderers(1)
        try:
            start = time.perf_counter()
            pool.submit("render", _render_whole, job, out)
            pieces = pool.collect(1)
            return Run(time.perf_counter() - start, out, pieces)
        finally:
            pool.close()


def _render_whole(job: Job, out: Path) -> None:
    render(job.compilation, job.sources, out, parallel=1, media=job.media)


class SplitLocal:
    """``renderers`` renderers on this machine render the parts and the sound, then one joins
    them; the pieces travel as files in ``work`` (a farm would upload and fetch them)."""

    def __init__(self, renderers: int) -> None:
        self.renderers = renderers
        self.name = f"split {renderers}"

    def run(self, job: Job, work: Path) -> Run:
        plan = render_plan(job.compilation, job.media)
        parts = split_plan(plan, self.renderers, parallel=1, min_work_s=0)
        files = [work / f"part-{part.index}.mp4" for part in parts]
        audio, out = work / "audio.m4a", work / "split.mp4"
        pool = Renderers(self.renderers)
        try:
            start = time.perf_counter()
            for part, path in sorted(zip(parts, files, strict=True), key=lambda p: -p[0].frames):
                pool.submit(f"part {part.index + 1}", _render_part, job, part, path)
            pool.submit("audio", _render_audio, job, audio)
            pieces = pool.collect(len(parts) + 1)
            pool.submit("join", _join, parts, files, audio, out)
            pieces |= pool.collect(1)
            wall = time.perf_counter() - start
        finally:
            pool.close()
        return Run(wall, out, pieces)


class Farm:
    """A board and ``farmhands`` farmhand processes, farmhand k (and every ffmpeg it starts)
    pinned to core k, started once for all reps; each run submits the job and times it from the
    submit to its success. A piece per farmhand: its CPU (its own and its ffmpegs') meanwhile."""

    def __init__(self, farmhands: int, raw: dict, media: Path) -> None:
        from farmproc import BenchBoard

        self.name = f"farm {farmhands}"
        self.count = farmhands
        self.board = BenchBoard(env={"BOARD_SPLIT_MIN_WORK_S": "0", "BOARD_HEARTBEAT_S": "2"})
        self.http = httpx.Client(base_url=self.board.url, timeout=120, headers={
            "Authorization": f"Bearer {self.board.token('submitter', 'bench')}"})  # fmt: skip
        self.raw = _as_board_media(raw, media, self.http)
        self.hands = [self._farmhand(k) for k in range(farmhands)]
        self.reps = 0
        with httpx.Client(base_url=self.board.url, timeout=30, headers={
                "Authorization": f"Bearer {self.board.admin_token}"}) as admin:  # fmt: skip
            deadline = time.monotonic() + 120
            while len(admin.get(routes.FARMHANDS).json()) < farmhands:
                if time.monotonic() > deadline:
                    raise RuntimeError("the farmhands did not come online")
                time.sleep(0.5)
        time.sleep(3)  # each one probed and long-polls

    def _farmhand(self, k: int) -> psutil.Popen:
        cores = sorted(os.sched_getaffinity(0))
        home = self.board.dir / f"farmhand-{k}"
        token = self.board.token("farmhand", f"bench-{k}")
        env = beside_a_board_env(self.board.url, token, f"bench-{k}", home, wait_s=20)
        log = open(home.with_suffix(".log"), "ab")
        return psutil.Popen(
            ["taskset", "-c", str(cores[k % len(cores)]), sys.executable, "-m", "farmhand.cli",
             "run"], env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def _cpu(self) -> list[float]:
        times = [hand.cpu_times() for hand in self.hands]
        return [t.user + t.system + t.children_user + t.children_system for t in times]

    def run(self, job: Job, work: Path) -> Run:
        self.reps += 1
        body = {"compilation": {**self.raw, "title": f"bench {self.name} {self.reps}"}}
        before = self._cpu()
        start = time.perf_counter()
        job_id = self.http.post(routes.JOBS, json=body).json()["id"]
        while (view := self.http.get(routes.path(routes.JOB, job_id=job_id)).json())["state"] \
                not in FINAL_STATES:  # fmt: skip
            time.sleep(0.1)
        wall = time.perf_counter() - start
        if view["state"] != "succeeded":
            raise RuntimeError(f"{self.name}: the job {view['state']}: {view['error']}")
        parts = sum(1 for p in view["parts"] if p["kind"] == "part")
        if (parts > 1) != (self.count > 1):
            raise RuntimeError(f"{self.name}: the job was split in {parts} parts")
        time.sleep(1)  # the farmhands have waited on their ffmpegs: their CPU is counted
        used = [after - b for after, b in zip(self._cpu(), before, strict=True)]
        out = work / "farm.mp4"
        out.write_bytes(self.http.get(routes.path(routes.JOB_OUTPUT, job_id=job_id)).content)
        pieces = {f"farmhand {k}": Piece(wall, cpu, k) for k, cpu in enumerate(used)}
        return Run(wall, out, pieces)

    def close(self) -> None:
        for hand in self.hands:
            hand.terminate()
        for hand in self.hands:
            hand.wait(30)
        self.http.close()
        self.board.close()


def _as_board_media(raw: dict, media: Path, http: httpx.Client) -> dict:
    """The compilation with its local files uploaded as board media (``{"path"}`` →
    ``{"media"}``), each file once."""
    uploaded: dict[str, str] = {}

    def convert(value):
        if isinstance(value, dict):
            if set(value) >= {"path"}:
                name = value["path"]
                if name not in uploaded:
                    answer = http.post(routes.MEDIA, params={"filename": Path(name).name},
                                       content=(media / name).read_bytes())  # fmt: skip
                    answer.raise_for_status()
                    uploaded[name] = answer.json()["id"]
                return {**{k: v for k, v in value.items() if k != "path"}, "media": uploaded[name]}
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return convert(raw)


def report_farm(whole: list[Run], split: list[Run], renderers: int) -> dict:
    """The farm's figures: the job's wall time on 1 farmhand and on N, side by side."""
    wall = {"whole": statistics.median(r.wall for r in whole),
            "split": statistics.median(r.wall for r in split)}  # fmt: skip
    paired = statistics.median(w.wall / s.wall for w, s in zip(whole, split, strict=True))
    path = {"whole": statistics.median(r.path_cpu for r in whole),
            "split": statistics.median(r.path_cpu for r in split)}  # fmt: skip
    outputs = (whole[-1].output, split[-1].output)
    sizes = [out.stat().st_size for out in outputs]
    similarity = ssim(outputs[1], outputs[0])
    print(
        f"  farm, submit to success: 1 farmhand {wall['whole']:.2f} s, {renderers} farmhands "
        f"{wall['split']:.2f} s: speed-up {wall['whole'] / wall['split']:.2f}x (median of "
        f"each rep's own ratio {paired:.2f}x); cpu along the busiest farmhand: "
        f"{path['whole']:.2f} s / {path['split']:.2f} s ({path['whole'] / path['split']:.2f}x)"
    )
    print(f"  output: whole {sizes[0]:,} bytes, split {sizes[1]:,} bytes "
          f"({sizes[1] / sizes[0] - 1:+.2%}); frames {frame_count(outputs[0])} / "
          f"{frame_count(outputs[1])}; SSIM split vs whole {similarity:.5f}")  # fmt: skip
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return {"farm_wall_s": wall, "paired_speedup": paired, "path_cpu_s": path, "sizes": sizes,
            "ssim": similarity}  # fmt: skip


def _render_part(job: Job, part: Part, out: Path) -> None:
    render_part(job.compilation, job.sources, part, out, parallel=1, media=job.media)


def _render_audio(job: Job, out: Path) -> None:
    render_audio(job.compilation, job.sources, out, media=job.media)


def _join(parts, files, audio, out) -> None:
    join_parts(parts, files, audio, out)


# ---------------------------------------------------------------- measuring


def ssim(distorted: Path, reference: Path) -> float:
    done = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostats", "-i", str(distorted), "-i", str(reference),
         "-lavfi", "[0:v][1:v]ssim", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"All:([0-9.]+)", done.stderr)
    return float(found.group(1)) if found else float("nan")


def frame_count(path: Path) -> int:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
         "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(done.stdout.strip())


def model(whole_s: float, parts_s: float, count: int, audio_s: float, join_s: float,
          n: int) -> float:  # fmt: skip
    """Wall seconds of a split into ``n`` parts (see the module's docstring), from a measured
    whole render and split into ``count`` parts."""
    video_s = whole_s - audio_s - join_s
    per_part_s = max(0.0, (parts_s - video_s) / count)
    return whole_s if n == 1 else video_s / n + per_part_s + audio_s + join_s


def report(whole: list[Run], split: list[Run], job: Job, args) -> dict:
    """Print the medians, the speed-ups, the model and the outputs' comparison; return them."""
    plan = render_plan(job.compilation, job.media)

    def median(of: Callable[[Run], float], runs: list[Run] = split) -> float:
        return statistics.median(of(run) for run in runs)

    wall = {"whole": median(lambda r: r.wall, whole), "split": median(lambda r: r.wall)}
    path = {"whole": median(lambda r: r.path_cpu, whole), "split": median(lambda r: r.path_cpu)}
    paired = statistics.median(w.wall / s.wall for w, s in zip(whole, split, strict=True))
    names = list(split[0].pieces)
    piece_wall = {name: median(lambda r, n=name: r.pieces[n].wall) for name in names}
    piece_cpu = {name: median(lambda r, n=name: r.pieces[n].cpu) for name in names}
    parts = [name for name in names if name.startswith("part")]
    parts_cpu = median(lambda r: sum(r.pieces[p].cpu for p in parts))
    modelled = {n: model(path["whole"], parts_cpu, len(parts), piece_cpu["audio"],
                         piece_cpu["join"], n) for n in (1, 2, 3, 4, 8)}  # fmt: skip
    work = work_s(plan)
    print(f"{args.height}p, {len(plan.items)} items -> {plan.planned_s:.1f} s of output, "
          f"{work:.1f} s of work (split.work_s: 1080p30 output encoded), "
          f"median of {args.reps}:")  # fmt: skip
    print(f"  wall: whole on 1 renderer {wall['whole']:.2f} s, split on {args.renderers} "
          f"{wall['split']:.2f} s: speed-up {wall['whole'] / wall['split']:.2f}x "
          f"(median of each rep's own ratio {paired:.2f}x)")  # fmt: skip
    total = {"whole": median(lambda r: r.cpu, whole), "split": median(lambda r: r.cpu)}
    print(f"  cpu along the longest renderer's path: whole {path['whole']:.2f} s, split "
          f"{path['split']:.2f} s: speed-up {path['whole'] / path['split']:.2f}x; all cpu: "
          f"whole {total['whole']:.1f} s, split {total['split']:.1f} s")  # fmt: skip
    print("  pieces (wall / cpu): " + "  ".join(
        f"{name} {piece_wall[name]:.2f} / {piece_cpu[name]:.2f} s" for name in names))  # fmt: skip
    print(f"  one renderer takes {path['whole'] / work:.2f} s of cpu per second of work "
          f"(split.MIN_PART_WORK_S is {MIN_PART_WORK_S:g})")  # fmt: skip
    print("  model from cpu, N renderers: " + "  ".join(
        f"N={n} {t:.1f} s ({path['whole'] / t:.2f}x)" for n, t in modelled.items()))  # fmt: skip
    outputs = (whole[-1].output, split[-1].output)
    sizes = [out.stat().st_size for out in outputs]
    frames = [frame_count(out) for out in outputs]
    similarity = ssim(outputs[1], outputs[0])
    print(f"  output: whole {sizes[0]:,} bytes, split {sizes[1]:,} bytes "
          f"({sizes[1] / sizes[0] - 1:+.2%}); frames {frames[0]} / {frames[1]} "
          f"(planned {plan.total_frames}); SSIM split vs whole {similarity:.5f}")  # fmt: skip
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return {"height": args.height, "reps": args.reps, "renderers": args.renderers,
            "wall_s": wall, "paired_speedup": paired, "path_cpu_s": path, "cpu_s": total,
            "pieces_wall_s": piece_wall, "pieces_cpu_s": piece_cpu, "model_s": modelled,
            "sizes": sizes, "frames": frames, "ssim": similarity, "work_s": work}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=720, help="output height")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--renderers", type=int, default=2)
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--farm", action="store_true",
                        help="through a real board and farmhand processes (see above)")  # fmt: skip
    args = parser.parse_args()
    print(f"# {machine()}", flush=True)
    make_media(args.media, MIXED)
    compilation, sources = load(mixed_compilation(args.height), args.media)
    job = Job(compilation, sources, probe_sources(compilation, sources))
    raw = mixed_compilation(args.height)
    if args.farm:
        setups: list[Setup] = [Farm(1, raw, args.media), Farm(args.renderers, raw, args.media)]
    else:
        setups = [Whole(), SplitLocal(args.renderers)]
    runs: dict[str, list[Run]] = {setup.name: [] for setup in setups}
    work = Path(tempfile.mkdtemp(prefix="clipfarm-bench-split-"))
    try:
        for rep in range(args.reps):
            order = setups[rep % len(setups) :] + setups[: rep % len(setups)]
            for setup in order:
                folder = work / f"{setup.name.replace(' ', '-')}-{rep}"
                folder.mkdir()
                run_load = os.getloadavg()[0]
                run = setup.run(job, folder)
                run.load = run_load
                runs[setup.name].append(run)
                print(f"  rep {rep + 1} {setup.name}: {run.wall:.2f} s, path {run.path_cpu:.2f} "
                      f"s cpu (load {run_load:.2f}; " + ", ".join(
                          f"{k} {v.wall:.2f}/{v.cpu:.2f}" for k, v in run.pieces.items()) + ")",
                      flush=True)  # fmt: skip
        if args.farm:
            result = report_farm(runs[setups[0].name], runs[setups[1].name], args.renderers)
        else:
            result = report(runs[setups[0].name], runs[setups[1].name], job, args)
        if args.json:
            result["machine"] = machine()
            result["runs"] = {name: [dataclasses.asdict(r) | {"output": str(r.output)}
                                     for r in rs] for name, rs in runs.items()}  # fmt: skip
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        for setup in setups:
            if isinstance(setup, Farm):
                setup.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
