"""Render a compilation to a verified mp4: probe → plan → segments + audio → join → verify.

``render`` is blocking (the farmhand calls it in a thread). It writes ``out`` atomically: the
result is built beside it under a hidden name and renamed only after ffprobe verified it. On any
error or cancel, every ffmpeg it started is killed and no output or temporary file is left.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from timeline.encoders import Encoder, get_encoder, software_encoder
from timeline.errors import (
    EncoderError,
    InputError,
    PermanentRenderError,
    RenderCancelled,
    RenderError,
)
from timeline.ffmpeg import FfmpegFailed, run_ffmpeg
from timeline.plan import SAMPLE_RATE, RenderPlan, Segment, render_plan, source_labels
from timeline.probe import MediaInfo, ProbeError, probe
from timeline.progress import Progress, ProgressTracker
from timeline.segments import (
    audio_mix_command,
    audio_part_command,
    audio_parts,
    audio_track_command,
    concat_list,
    input_memory_mb,
    mux_command,
    segment_command,
    segment_memory_mb,
    thumbnail_command,
)
from timeline.spec import Compilation
from timeline.text import find_font

AAC_FRAME_S = 1024 / SAMPLE_RATE
PROBE_THREADS = 4
# Share of the progress bar for the passes that are not video segments (by planned seconds).
AUDIO_WEIGHT = 0.04
AUDIO_PART_WEIGHT = 0.01
MUX_WEIGHT = 0.02
# What the segments encoding at once may take together (segments.segment_memory_mb and
# input_memory_mb), in MB: a segment holding more items opens fewer processes and decodes the
# start of fewer items twice, but every input it opens keeps its frames until it ends.
MEMORY_BUDGET_MB = 900.0
# Lines of ffmpeg output that mean the encoder or its device failed, not the input.
_ENCODER_SIGNS = (
    "error while opening encoder", "could not open encoder", "cannot load", "no device",
    "device creation failed", "failed to initialise", "failed to initialize", "openencodesession",
    "hwupload", "no capable devices", "nvenc", "vaapi", "qsv", "amf", "videotoolbox",
    "error initializing output stream",
)  # fmt: skip


@dataclass
class RenderResult:
    """A finished, verified render."""

    path: Path
    duration_s: float
    planned_s: float
    width: int
    height: int
    fps: float
    size_bytes: int
    encoder: str
    render_s: float
    thumbnail: Path | None
    stderr_tail: str


def render(
    compilation: Compilation,
    sources: Mapping[str, Path],
    out: Path,
    *,
    encoder: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    workdir: Path | None = None,
    parallel: int = 2,
    thumbnail: Path | None = None,
    nice: bool = False,
) -> RenderResult:
    """Render ``compilation`` to the mp4 ``out`` and verify it.

    ``sources`` maps the ``Source.key`` of every source in ``compilation.sources()`` to a local
    file. ``encoder`` names a row of the encoder table (default: the software encoder of the
    output codec). ``progress`` is called from worker threads with the overall ``Progress``.
    Setting ``cancel`` stops the render within about a second (``RenderCancelled``).
    ``workdir`` holds the intermediate files (default: beside ``out``); ``parallel`` segments
    are encoded at a time; ``thumbnail``, if given, receives a JPEG of the result; ``nice`` runs
    ffmpeg at the lowest CPU and IO priority.

    Raises ``InputError``/``PermanentRenderError`` when the compilation or a source is at fault,
    ``EncoderError`` when the encoder failed, ``RenderCancelled``, or ``RenderError``.
    """
    started = time.monotonic()
    chosen = get_encoder(encoder) if encoder else software_encoder(compilation.output.codec)
    if chosen.codec != compilation.output.codec:
        raise PermanentRenderError(
            f"encoder {chosen.name} makes {chosen.codec}, but the output asks for "
            f"{compilation.output.codec}"
        )
    cancel = cancel if cancel is not None else threading.Event()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    part = out.with_name(f".{out.name}.{token}.part")
    thumb_part = thumbnail.with_name(f".{thumbnail.name}.{token}.part") if thumbnail else None
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".work", dir=workdir or out.parent))
    job = _Job(chosen, cancel, nice, ProgressTracker(progress), work)
    try:
        media = probe_sources(compilation, sources, cancel)
        plan = render_plan(compilation, media)
        paths = {key: info.path for key, info in media.items()}
        job.run_passes(plan, paths, part, parallel)
        verified = verify_output(part, planned_s=plan.planned_s, width=plan.width,
                                 height=plan.height, fps=float(plan.fps))  # fmt: skip
        if thumbnail is not None and thumb_part is not None:
            job.check_cancel()
            job.ffmpeg(thumbnail_command(part, _thumbnail_at(plan), thumb_part), "thumbnail")
            os.replace(thumb_part, thumbnail)
        job.check_cancel()
        os.replace(part, out)
    except BaseException:
        for leftover in (part, thumb_part):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return RenderResult(
        path=out,
        duration_s=verified.video_duration_s or verified.duration_s or 0.0,
        planned_s=plan.planned_s,
        width=verified.width,
        height=verified.height,
        fps=verified.fps,
        size_bytes=out.stat().st_size,
        encoder=chosen.name,
        render_s=time.monotonic() - started,
        thumbnail=thumbnail,
        stderr_tail=job.stderr_tail(),
    )


class _Job:
    """One render's running state: its encoder, cancel flag, progress and ffmpeg logs."""

    def __init__(
        self, encoder: Encoder, cancel: threading.Event, nice: bool, tracker: ProgressTracker,
        work: Path,
    ) -> None:  # fmt: skip
        self.encoder = encoder
        self.cancel = cancel
        self.nice = nice
        self.tracker = tracker
        self.work = work
        self.stop = threading.Event()  # set on cancel or on the first failure: ends the others
        self._tails: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise RenderCancelled("render cancelled")

    def ffmpeg(self, args: list[str], what: str, job: str | None = None) -> None:
        """Run one ffmpeg step, reporting progress under ``job`` and keeping its stderr tail."""
        on_report = (lambda report: self.tracker.report(job, report)) if job else None
        try:
            tail = run_ffmpeg(args, what=what, cancel=self.stop if job else self.cancel,
                              on_report=on_report, nice=self.nice)  # fmt: skip
        except FfmpegFailed as exc:
            self._keep(what, exc.stderr_tail)
            raise
        self._keep(what, tail)
        if job:
            self.tracker.finish(job)

    def _keep(self, what: str, tail: str) -> None:
        if tail.strip():
            with self._lock:
                self._tails.append((what, tail))

    def stderr_tail(self, limit: int = 8000) -> str:
        text = "\n".join(f"[{what}]\n{tail}" for what, tail in self._tails)
        return text[-limit:]

    def run_passes(self, plan: RenderPlan, paths: dict[str, Path], part: Path, parallel: int):
        """Audio track and video segments (``parallel`` at a time, the audio beside them), then
        the join into ``part``."""
        parallel = max(1, parallel)
        room = MEMORY_BUDGET_MB / parallel - segment_memory_mb(plan)
        weights = [input_memory_mb(plan, item) for item in plan.items]
        spans = plan.balanced_spans(parallel, weights, room)
        segments = plan.segments(spans)
        threads = threads_per_segment(parallel)
        font = find_font()
        total = plan.planned_s
        parts = audio_parts(plan)
        part_files = [self.work / f"audio-{k:04d}.mka" for k in range(len(parts))]
        if len(parts) > 1:
            for k, (first, last) in enumerate(parts):
                length = plan.seconds(plan.items[last].end_frame - plan.items[first].start_frame)
                self.tracker.add_job(f"audio part {k}", length * AUDIO_PART_WEIGHT,
                                     length_s=length, video=False)  # fmt: skip
        self.tracker.add_job("audio", total * AUDIO_WEIGHT, length_s=total, video=False)
        for seg in segments:
            self.tracker.add_job(f"segment {seg.index}", plan.seconds(seg.frames), video=True)
        self.tracker.add_job("mux", total * MUX_WEIGHT, length_s=total, video=False)

        audio = self.work / "audio.m4a"
        files = [self.work / f"segment-{seg.index:05d}.mp4" for seg in segments]

        def audio_pass() -> None:
            if len(parts) == 1:
                args = audio_track_command(plan, audio, self.work / "audio.graph", paths)
                self._step(args, "audio track", "audio", plan, None)
                return
            for k in range(len(parts)):
                graph = self.work / f"audio-{k:04d}.graph"
                args = audio_part_command(plan, parts[k], part_files[k], graph, paths)
                self._step(args, f"audio part {k + 1} of {len(parts)}", f"audio part {k}", plan,
                           None)  # fmt: skip
            args = audio_mix_command(plan, parts, part_files, audio,
                                     self.work / "audio.graph", paths)  # fmt: skip
            self._step(args, "audio track", "audio", plan, None)

        def segment_pass(seg: Segment) -> None:
            graph = self.work / f"segment-{seg.index:05d}.graph"
            args = segment_command(plan, seg, self.encoder, files[seg.index], graph, font, paths,
                                   threads=threads)  # fmt: skip
            self._step(args, f"segment {seg.index + 1} of {len(segments)}", f"segment {seg.index}",
                       plan, seg)  # fmt: skip

        # The biggest segments first, so the last ones to start are the short ones and all end
        # about together; the sound (a few % of the work) last, on whichever worker is free
        # first, where it fills the gap the estimate left rather than delaying a segment.
        order = sorted(segments, key=lambda seg: -plan.segment_cost(seg))
        tasks: list[Callable[[], None]] = [lambda seg=seg: segment_pass(seg) for seg in order]
        tasks.append(audio_pass)
        self._run_all(tasks, parallel)

        self.check_cancel()
        listing = self.work / "segments.txt"
        concat_list(plan, files, listing, segments)
        self._step(mux_command(plan, self.encoder, listing, audio, part), "final join", "mux",
                   plan, None)  # fmt: skip

    def _step(self, args, what: str, job: str, plan: RenderPlan, segment: Segment | None) -> None:
        if self.stop.is_set():
            raise RenderCancelled(f"{what}: not started, the render is stopping")
        try:
            self.ffmpeg(args, what, job)
        except FfmpegFailed as exc:
            raise _classify(exc, plan, segment, self.encoder) from exc

    def _run_all(self, tasks: list[Callable[[], None]], workers: int) -> None:
        """Run ``tasks`` in order on ``workers`` threads. The first failure (or a cancel) stops
        the rest and is raised once all have ended."""
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="timeline") as pool:
            pending: set[Future] = {pool.submit(task) for task in tasks}
            first_error: BaseException | None = None
            while pending:
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
                if self.cancel.is_set():
                    self.stop.set()
                for future in done:
                    error = future.exception()
                    if error is not None and not isinstance(error, RenderCancelled):
                        first_error = first_error or error
                        self.stop.set()
        self.check_cancel()
        if first_error is not None:
            raise first_error


def threads_per_segment(parallel: int) -> int:
    """CPU threads for each of ``parallel`` segments encoding at once: an equal share of the
    cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, parallel))


def _classify(
    exc: FfmpegFailed, plan: RenderPlan, segment: Segment | None, encoder: Encoder
) -> RenderError:
    """Whose fault an ffmpeg failure was: an input's (named), the encoder's, or the run's."""
    lines = exc.stderr_tail.lower()
    items = range(len(plan.items))
    if segment is not None:
        items = range(segment.item, (segment.head_item or segment.last_item) + 1)
    for i in items:
        item = plan.items[i]
        if item.info is not None and str(item.info.path).lower() in lines:
            return InputError(f"{item.label}: ffmpeg could not read it ({exc.message})",
                              source_key=item.key, label=item.label,
                              stderr_tail=exc.stderr_tail)  # fmt: skip
    if segment is not None and (encoder.hardware or any(s in lines for s in _ENCODER_SIGNS)):
        return EncoderError(f"encoder {encoder.name} failed: {exc.message}",
                            stderr_tail=exc.stderr_tail)  # fmt: skip
    return RenderError(exc.message, stderr_tail=exc.stderr_tail)


def probe_sources(
    compilation: Compilation,
    sources: Mapping[str, Path],
    cancel: threading.Event | None = None,
) -> dict[str, MediaInfo]:
    """Probe every source of ``compilation`` once (a few at a time): ``Source.key`` -> info.
    Raises ``ProbeError`` naming the source, or ``RenderError`` when one has no local file."""
    cancel = cancel if cancel is not None else threading.Event()
    labels = source_labels(compilation)
    wanted = [s.key for s in compilation.sources()]
    for key in wanted:
        if key not in sources:
            raise RenderError(f"{labels.get(key, key)}: no local file was given for it")

    def one(key: str) -> MediaInfo:
        if cancel.is_set():
            raise RenderCancelled("render cancelled")
        try:
            return probe(Path(sources[key]).resolve(), label=labels.get(key, key))
        except ProbeError as exc:  # the same kind of error (a playlist, over a cap), now keyed
            raise type(exc)(exc.message, source_key=key, label=labels.get(key, key),
                            stderr_tail=exc.stderr_tail) from exc  # fmt: skip

    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        found = dict(zip(wanted, pool.map(one, wanted), strict=True))
    if cancel.is_set():
        raise RenderCancelled("render cancelled")
    return found


def _thumbnail_at(plan: RenderPlan) -> float:
    """The middle of the first clip: more telling than an intro card."""
    clip = next(item for item in plan.items if item.role == "clip")
    return plan.seconds(clip.start_frame + clip.frames // 2)


def verify_output(
    path: Path, *, planned_s: float, width: int, height: int, fps: float
) -> MediaInfo:
    """Check a rendered file with ffprobe: a video of ``width`` x ``height`` at ``fps`` lasting
    ``planned_s`` (within one frame), AAC-ready 48 kHz stereo sound ending within one AAC frame
    of the picture. Returns its ``MediaInfo``; raises ``RenderError`` listing what is wrong."""
    try:
        info = probe(Path(path), label="the rendered file", limits=False)
    except ProbeError as exc:  # our own output: not the input's fault, so not permanent
        raise RenderError(exc.message, stderr_tail=exc.stderr_tail) from exc
    problems = []
    if not info.has_video:
        problems.append("it has no video stream")
    if not info.has_audio:
        problems.append("it has no audio stream")
    if info.has_video:
        if (info.width, info.height) != (width, height):
            problems.append(f"its size is {info.width}x{info.height}, not {width}x{height}")
        if abs(info.fps - fps) > 0.01:
            problems.append(f"its frame rate is {info.fps:.3f}, not {fps:.3f}")
        video_s = info.video_duration_s or info.duration_s or 0.0
        if abs(video_s - planned_s) > 1 / fps + 1e-3:
            problems.append(f"it lasts {video_s:.3f} s, planned {planned_s:.3f} s")
        if info.has_audio:
            audio_s = info.audio_duration_s or 0.0
            if abs(audio_s - video_s) > AAC_FRAME_S + 1e-3:
                problems.append(f"its sound lasts {audio_s:.3f} s, the picture {video_s:.3f} s")
    if info.has_audio and (info.audio_rate, info.audio_channels) != (SAMPLE_RATE, 2):
        problems.append(f"its sound is {info.audio_rate} Hz with {info.audio_channels} "
                        "channels, not 48000 Hz stereo")  # fmt: skip
    if problems:
        raise RenderError("the rendered file failed verification: " + "; ".join(problems))
    return info
