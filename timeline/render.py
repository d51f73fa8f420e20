"""Render a compilation to a verified mp4: probe → plan → segments + audio → join → verify.

``render`` is blocking (the farmhand calls it in a thread). It writes ``out`` atomically: the
result is built beside it under a hidden name and renamed only after ffprobe verified it. On any
error or cancel, every ffmpeg it started is killed and no output or temporary file is left.

A render is made of ``RenderSteps``: plan, video segments, the audio track, a join by stream
copy, publish. A render split across machines (``timeline.split``) runs the same steps in other
groupings (some segments and a join; the audio alone; a join of parts), with the same
guarantees.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
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
    join_command,
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
    media: Mapping[str, MediaInfo] | None = None,
) -> RenderResult:
    """Render ``compilation`` to the mp4 ``out`` and verify it.

    ``sources`` maps the ``Source.key`` of every source in ``compilation.sources()`` to a local
    file. ``encoder`` names a row of the encoder table (default: the software encoder of the
    output codec). ``progress`` is called from worker threads with the overall ``Progress``.
    Setting ``cancel`` stops the render within about a second (``RenderCancelled``).
    ``workdir`` holds the intermediate files (default: beside ``out``); ``parallel`` segments
    are encoded at a time; ``thumbnail``, if given, receives a JPEG of the result; ``nice`` runs
    ffmpeg at the lowest CPU and IO priority; ``media`` may hold probes of the sources the
    caller already has (``probe_sources``' ``known``), which are not probed again.

    Raises ``InputError``/``PermanentRenderError`` when the compilation or a source is at fault,
    ``EncoderError`` when the encoder failed, ``RenderCancelled``, or ``RenderError``.
    """
    started = time.monotonic()
    chosen = encoder_for(compilation, encoder)
    parallel = max(1, parallel)
    with RenderSteps.begin(out, chosen, progress=progress, cancel=cancel, workdir=workdir,
                           nice=nice, thumbnail=thumbnail) as steps:  # fmt: skip
        plan, paths = steps.plan(compilation, sources, media)
        segments = plan.segments(video_spans(plan, parallel, parallel))
        tasks, files = steps.video_tasks(plan, paths, segments, threads_per_segment(parallel))
        audio = steps.work / "audio.m4a"
        # The biggest segments first (video_tasks' order), so the last ones to start are the
        # short ones and all end about together; the sound (a few % of the work) last, on
        # whichever worker is free first, where it fills the gap the estimate left rather than
        # delaying a segment.
        tasks.append(steps.audio_task(plan, paths, audio))
        join = steps.join_task(plan.fps, plan.codec, files, [seg.start_frame for seg in segments],
                               plan.total_frames, audio=audio, what="final join")  # fmt: skip
        steps.run_all(tasks, parallel)
        join()
        verified = verify_output(steps.hidden, planned_s=plan.planned_s, width=plan.width,
                                 height=plan.height, fps=float(plan.fps),
                                 frames=plan.total_frames)  # fmt: skip
        steps.publish(thumbnail_at(plan))
    return RenderResult(
        path=steps.out,
        duration_s=verified.video_duration_s or verified.duration_s or 0.0,
        planned_s=plan.planned_s,
        width=verified.width,
        height=verified.height,
        fps=verified.fps,
        size_bytes=steps.out.stat().st_size,
        encoder=chosen.name,
        render_s=time.monotonic() - started,
        thumbnail=thumbnail,
        stderr_tail=steps.stderr_tail(),
    )


def encoder_for(compilation: Compilation, name: str | None) -> Encoder:
    """The encoder table's row ``name`` (default: the software encoder of the output codec);
    ``PermanentRenderError`` when it makes another codec than the output asks for."""
    chosen = get_encoder(name) if name else software_encoder(compilation.output.codec)
    if chosen.codec != compilation.output.codec:
        raise PermanentRenderError(
            f"encoder {chosen.name} makes {chosen.codec}, but the output asks for "
            f"{compilation.output.codec}"
        )
    return chosen


def video_spans(plan: RenderPlan, segments: int, parallel: int) -> list[tuple[int, int]]:
    """The runs of items the video is encoded in (``RenderPlan.segments``): a multiple of
    ``segments`` runs of about equal work, each small enough that ``parallel`` of them encoding
    at once on one machine stay within ``MEMORY_BUDGET_MB``."""
    room = MEMORY_BUDGET_MB / max(1, parallel) - segment_memory_mb(plan)
    weights = [input_memory_mb(plan, item) for item in plan.items]
    return plan.balanced_spans(segments, weights, room)


class RenderSteps:
    """One render's running state (encoder, cancel flag, progress, ffmpeg logs, work folder)
    and the steps it is made of. Start one with ``RenderSteps.begin``: the result is built
    under the hidden name ``hidden`` beside ``out``; ``publish`` renames it once verified. Steps
    are created first (so progress knows the whole) and run after (``run_all``, then the join).
    """

    def __init__(
        self, out: Path, encoder: Encoder | None, cancel: threading.Event, nice: bool,
        tracker: ProgressTracker, work: Path, thumbnail: Path | None,
    ) -> None:  # fmt: skip
        token = secrets.token_hex(4)
        self.out = out
        self.hidden = out.with_name(f".{out.name}.{token}.part")
        self.thumbnail = thumbnail
        self.hidden_thumbnail = (
            thumbnail.with_name(f".{thumbnail.name}.{token}.part") if thumbnail else None
        )
        self.encoder = encoder
        self.cancel = cancel
        self.nice = nice
        self.tracker = tracker
        self.work = work
        self.stop = threading.Event()  # set on cancel or on the first failure: ends the others
        self._tails: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    @classmethod
    @contextmanager
    def begin(
        cls,
        out: Path,
        encoder: Encoder | None,
        *,
        progress: Callable[[Progress], None] | None,
        cancel: threading.Event | None,
        workdir: Path | None,
        nice: bool,
        thumbnail: Path | None = None,
    ) -> Iterator[RenderSteps]:
        """The steps of a render to ``out`` (and ``thumbnail``), in a fresh work folder in
        ``workdir`` (default: beside ``out``). On leaving, the work folder is removed; on an
        error or cancel, the hidden files too, so nothing partial is ever left."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".work",
                                     dir=workdir or out.parent))  # fmt: skip
        cancel = cancel if cancel is not None else threading.Event()
        steps = cls(out, encoder, cancel, nice, ProgressTracker(progress), work, thumbnail)
        try:
            yield steps
        except BaseException:
            for leftover in (steps.hidden, steps.hidden_thumbnail):
                if leftover is not None:
                    leftover.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise RenderCancelled("render cancelled")

    def plan(
        self,
        compilation: Compilation,
        sources: Mapping[str, Path],
        known: Mapping[str, MediaInfo] | None = None,
    ) -> tuple[RenderPlan, dict[str, Path]]:
        """The plan (``probe_sources``, then ``render_plan``) and the local file of each source
        in ``sources``."""
        media = probe_sources(compilation, sources, self.cancel, known=known)
        plan = render_plan(compilation, media)
        return plan, {key: info.path for key, info in media.items() if key in sources}

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

    def video_tasks(
        self, plan: RenderPlan, paths: Mapping[str, Path], segments: Sequence[Segment],
        threads: int,
    ) -> tuple[list[Callable[[], None]], list[Path]]:  # fmt: skip
        """A task encoding each of ``segments`` (numbered from 0) with ``threads`` threads, the
        biggest first, and the files they write, in the segments' order."""
        font = find_font()
        files = [self.work / f"segment-{seg.index:05d}.mp4" for seg in segments]
        for seg in segments:
            self.tracker.add_job(f"segment {seg.index}", plan.seconds(seg.frames), video=True)

        def encode(seg: Segment) -> None:
            graph = self.work / f"segment-{seg.index:05d}.graph"
            args = segment_command(plan, seg, self.encoder, files[seg.index], graph, font,
                                   dict(paths), threads=threads)  # fmt: skip
            self._step(args, f"segment {seg.index + 1} of {len(segments)}",
                       f"segment {seg.index}", plan, seg)  # fmt: skip

        order = sorted(segments, key=lambda seg: -plan.segment_cost(seg))
        return [lambda seg=seg: encode(seg) for seg in order], files

    def audio_task(
        self, plan: RenderPlan, paths: Mapping[str, Path], out: Path
    ) -> Callable[[], None]:
        """A task rendering the whole audio track to ``out`` (AAC in mp4): the items' sound,
        a few dozen items at a time when there are many, then the music and one AAC encode."""
        parts = audio_parts(plan)
        part_files = [self.work / f"audio-{k:04d}.mka" for k in range(len(parts))]
        total = plan.planned_s
        if len(parts) > 1:
            for k, (first, last) in enumerate(parts):
                length = plan.seconds(plan.items[last].end_frame - plan.items[first].start_frame)
                self.tracker.add_job(f"audio part {k}", length * AUDIO_PART_WEIGHT,
                                     length_s=length, video=False)  # fmt: skip
        self.tracker.add_job("audio", total * AUDIO_WEIGHT, length_s=total, video=False)
        files = dict(paths)

        def run() -> None:
            graph = self.work / "audio.graph"
            if len(parts) == 1:
                args = audio_track_command(plan, out, graph, files)
                self._step(args, "audio track", "audio", plan, None)
                return
            for k in range(len(parts)):
                part_graph = self.work / f"audio-{k:04d}.graph"
                args = audio_part_command(plan, parts[k], part_files[k], part_graph, files)
                self._step(args, f"audio part {k + 1} of {len(parts)}", f"audio part {k}", plan,
                           None)  # fmt: skip
            args = audio_mix_command(plan, parts, part_files, out, graph, files)
            self._step(args, "audio track", "audio", plan, None)

        return run

    def join_task(
        self,
        fps: Fraction,
        codec: str,
        files: Sequence[Path],
        starts: Sequence[int],
        end: int,
        *,
        audio: Path | None,
        what: str,
        listing: str = "segments.txt",
    ) -> Callable[[], None]:
        """A task joining the video ``files`` (file k begins at output frame ``starts[k]``, the
        last ends at frame ``end``) by stream copy into ``hidden``, with the audio track
        ``audio`` or without sound."""
        length = float((end - starts[0]) / fps)
        self.tracker.add_job("join", length * MUX_WEIGHT, length_s=length, video=False)

        def run() -> None:
            self.check_cancel()
            list_file = self.work / listing
            concat_list(fps, files, starts, end, list_file)
            args = join_command(fps, codec, list_file, self.hidden, audio)
            self._step(args, what, "join", None, None)

        return run

    def publish(self, thumbnail_at_s: float = 0.0) -> None:
        """Write the thumbnail (when one was asked for) at ``thumbnail_at_s`` seconds of the
        verified result, then rename the result and the thumbnail onto their names."""
        if self.thumbnail is not None and self.hidden_thumbnail is not None:
            self.check_cancel()
            self.ffmpeg(thumbnail_command(self.hidden, thumbnail_at_s, self.hidden_thumbnail),
                        "thumbnail")  # fmt: skip
            os.replace(self.hidden_thumbnail, self.thumbnail)
        self.check_cancel()
        os.replace(self.hidden, self.out)

    def _step(
        self, args, what: str, job: str, plan: RenderPlan | None, segment: Segment | None
    ) -> None:
        if self.stop.is_set():
            raise RenderCancelled(f"{what}: not started, the render is stopping")
        try:
            self.ffmpeg(args, what, job)
        except FfmpegFailed as exc:
            raise _classify(exc, plan, segment, self.encoder) from exc

    def run_all(self, tasks: Sequence[Callable[[], None]], workers: int) -> None:
        """Run ``tasks`` in order on ``workers`` threads. The first failure (or a cancel) stops
        the rest and is raised once all have ended."""
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="timeline") as pool:
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
    exc: FfmpegFailed, plan: RenderPlan | None, segment: Segment | None, encoder: Encoder | None
) -> RenderError:
    """Whose fault an ffmpeg failure was: an input's (named), the encoder's, or the run's."""
    if plan is None:  # a join of the renderer's own files
        return RenderError(exc.message, stderr_tail=exc.stderr_tail)
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
    if (
        segment is not None
        and encoder is not None
        and (encoder.hardware or any(s in lines for s in _ENCODER_SIGNS))
    ):
        return EncoderError(f"encoder {encoder.name} failed: {exc.message}",
                            stderr_tail=exc.stderr_tail)  # fmt: skip
    return RenderError(exc.message, stderr_tail=exc.stderr_tail)


def probe_sources(
    compilation: Compilation,
    sources: Mapping[str, Path],
    cancel: threading.Event | None = None,
    *,
    known: Mapping[str, MediaInfo] | None = None,
) -> dict[str, MediaInfo]:
    """Probe every source of ``compilation`` once (a few at a time): ``Source.key`` -> info.

    ``known`` holds probes the caller already has (a board's, for a render split across
    machines): they are used as given, ``path`` set to the local file when ``sources`` has one,
    so the plan is computed from the same facts wherever it is computed. Raises ``ProbeError``
    naming the source, or ``RenderError`` when one has neither a local file nor a known probe."""
    cancel = cancel if cancel is not None else threading.Event()
    known = known or {}
    labels = source_labels(compilation)
    wanted = [s.key for s in compilation.sources()]
    for key in wanted:
        if key not in sources and key not in known:
            raise RenderError(f"{labels.get(key, key)}: no local file was given for it")

    def one(key: str) -> MediaInfo:
        if cancel.is_set():
            raise RenderCancelled("render cancelled")
        if key in known:
            local = Path(sources[key]).resolve() if key in sources else known[key].path
            return dataclasses.replace(known[key], path=local)
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


def thumbnail_at(plan: RenderPlan) -> float:
    """Where the thumbnail is taken, in seconds: the middle of the first clip, more telling
    than an intro card."""
    clip = next(item for item in plan.items if item.role == "clip")
    return plan.seconds(clip.start_frame + clip.frames // 2)


def verify_output(
    path: Path,
    *,
    planned_s: float,
    width: int,
    height: int,
    fps: float,
    frames: int | None = None,
    audio: bool = True,
) -> MediaInfo:
    """Check a rendered file with ffprobe: a video of ``width`` x ``height`` at ``fps`` lasting
    ``planned_s`` (within one frame) and holding ``frames`` frames (when given); with ``audio``,
    AAC-ready 48 kHz stereo sound ending within one AAC frame of the picture (without, a
    picture-only part of a split render). Returns its ``MediaInfo``; raises ``RenderError``
    listing what is wrong."""
    info = _probe_rendered(path)
    problems = []
    if not info.has_video:
        problems.append("it has no video stream")
    else:
        if (info.width, info.height) != (width, height):
            problems.append(f"its size is {info.width}x{info.height}, not {width}x{height}")
        if abs(info.fps - fps) > 0.01:
            problems.append(f"its frame rate is {info.fps:.3f}, not {fps:.3f}")
        video_s = info.video_duration_s or info.duration_s or 0.0
        if abs(video_s - planned_s) > 1 / fps + 1e-3:
            problems.append(f"it lasts {video_s:.3f} s, planned {planned_s:.3f} s")
        if frames is not None and info.video_frames != frames:
            problems.append(f"it holds {info.video_frames} frames, planned {frames}")
    if audio:
        problems += _sound_problems(info, planned_s, "the picture" if info.has_video else "")
    _refuse(problems)
    return info


def verify_audio(path: Path, *, planned_s: float) -> MediaInfo:
    """Check a rendered audio track with ffprobe: 48 kHz stereo lasting ``planned_s`` within
    one AAC frame. Returns its ``MediaInfo``; raises ``RenderError`` listing what is wrong."""
    info = _probe_rendered(path)
    _refuse(_sound_problems(info, planned_s, ""))
    return info


def _probe_rendered(path: Path) -> MediaInfo:
    try:
        return probe(Path(path), label="the rendered file", limits=False)
    except ProbeError as exc:  # our own output: not the input's fault, so not permanent
        raise RenderError(exc.message, stderr_tail=exc.stderr_tail) from exc


def _sound_problems(info: MediaInfo, planned_s: float, picture: str) -> list[str]:
    """What is wrong with ``info``'s sound: missing, not 48 kHz stereo, or not ending within one
    AAC frame of the picture (``picture`` names it) or of ``planned_s``."""
    if not info.has_audio:
        return ["it has no audio stream"]
    problems = []
    length_s = (info.video_duration_s or info.duration_s or 0.0) if picture else planned_s
    audio_s = info.audio_duration_s or 0.0
    if abs(audio_s - length_s) > AAC_FRAME_S + 1e-3:
        against = f"{picture} {length_s:.3f} s" if picture else f"planned {length_s:.3f} s"
        problems.append(f"its sound lasts {audio_s:.3f} s, {against}")
    if (info.audio_rate, info.audio_channels) != (SAMPLE_RATE, 2):
        problems.append(f"its sound is {info.audio_rate} Hz with {info.audio_channels} "
                        "channels, not 48000 Hz stereo")  # fmt: skip
    return problems


def _refuse(problems: list[str]) -> None:
    if problems:
        raise RenderError("the rendered file failed verification: " + "; ".join(problems))
