"""One compilation rendered in parts on several machines: plan the parts, render each, render the
sound once, join them by stream copy.

A render already encodes its video as segments (``timeline.render``): each its own encode with
identical settings, so each starts on a keyframe with a closed GOP; a transition is never cut in
two, because the segment that ends with an xfade carries the head of the next item. A *part* is
a run of whole segments: the unit of work one machine renders. The pieces:

- ``split_plan(plan, renderers)``: pure, from the plan alone (the board can compute it from its
  probes); the parts, as small serialisable ``Part`` structs, or one part when splitting does not
  pay (``parts_that_pay``).
- ``render_part``: one part's segments, joined by stream copy into a picture-only mp4. The
  machine computes the plan itself and refuses a part planned from other facts
  (``PlanMismatch``): its frames would not line up with the other parts'.
- ``render_audio``: the whole audio track, exactly as ``render`` makes it (AAC in an m4a).
- ``join_parts``: the parts and the audio track into the output (``+faststart``), verified like
  a render's. It needs no sources: the parts say where each one goes.

Parts are mp4 files because the concat demuxer places mp4 files exactly: their track timescale
is a multiple of the frame rate (``segments.track_timescale``), so every frame time is whole
ticks, and the concat list gives each file its exact duration. MPEG-TS counts 90 kHz ticks,
inexact at 24000/1001 fps; Matroska milliseconds, inexact at 30 fps: either would jitter the
joined timestamps by a fraction of a frame.

Split and unsplit renders give the same timeline: the same frames at the same times, the same
sound. Their pictures are bit-identical when the segments are the same (``video_spans``) and
every encoder ran with the same settings, threads included (x264's output depends on its thread
count; its stream headers do not, so a join of parts made with other thread counts is valid).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import msgspec

from timeline.errors import PartRejected, PlanMismatch, RenderError
from timeline.ffmpeg import ffprobe_binary
from timeline.inputs import own_input
from timeline.plan import RenderPlan, Segment, balanced_runs, source_labels
from timeline.probe import MediaInfo
from timeline.progress import Progress
from timeline.render import (
    RenderResult,
    RenderSteps,
    encoder_for,
    threads_per_segment,
    verify_audio,
    verify_output,
    video_spans,
)
from timeline.spec import Compilation

# A part pays when it holds at least this much work, in seconds of 1080p30 output encoded
# (``RenderPlan.item_cost``, so decoding and blur count too): a minute of 1080p is tens of
# seconds of encoding even on a fast farmhand, so a part's fixed costs (a claim, fetching its
# sources, ffmpeg start-ups, an upload, its share of the join: seconds) stay small beside it.
# BENCHMARKS.md ("Split render") has what a unit of work costs on one core.
MIN_PART_WORK_S = 60.0
_SECOND_OF_1080P30 = 1920 * 1080 * 30
PART_PROBE_TIMEOUT_S = 60.0


class PlanFingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """What a split render was planned from, for a machine to check that its own plan of the
    compilation is the same: the output's frames, rate (``"30000/1001"``), size and codec, each
    item's length in frames, and a digest of every other decision (trims, transitions,
    overlays, music, watermark). Equal fingerprints mean the same timeline."""

    total_frames: int
    fps: str
    width: int
    height: int
    codec: str
    item_frames: tuple[int, ...]
    digest: str

    @property
    def rate(self) -> Fraction:
        return Fraction(self.fps)


class Part(msgspec.Struct, frozen=True, kw_only=True):
    """Part ``index`` (from 0) of ``of``: the video segments ``segments`` (each the items
    ``(first, last)`` it shows, inclusive), output frames ``start_frame`` to ``start_frame +
    frames``. ``sources`` are the ``Source.key`` of every file it reads (its items, the head of
    the item after it when it ends in an xfade, the watermark); ``plan`` is what it was planned
    from."""

    index: int
    of: int
    segments: tuple[tuple[int, int], ...]
    start_frame: int
    frames: int
    sources: tuple[str, ...]
    plan: PlanFingerprint

    @property
    def items(self) -> tuple[int, int]:
        """The first and last item the part shows (first, last inclusive)."""
        return self.segments[0][0], self.segments[-1][1]

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.frames


@dataclass
class PartResult:
    """A rendered, verified part: a picture-only mp4."""

    path: Path
    index: int
    frames: int
    duration_s: float
    size_bytes: int
    encoder: str
    render_s: float
    stderr_tail: str


@dataclass
class AudioResult:
    """A rendered, verified audio track: AAC 48 kHz stereo in an m4a."""

    path: Path
    duration_s: float
    size_bytes: int
    render_s: float
    stderr_tail: str


# ---------------------------------------------------------------- planning the parts


def plan_fingerprint(plan: RenderPlan) -> PlanFingerprint:
    """The fingerprint of ``plan``: the same for the same compilation and probes on any
    machine (it holds no paths)."""
    music, mark = plan.music, plan.watermark
    decisions = {
        "output": [plan.width, plan.height, str(plan.fps), plan.codec, plan.quality, plan.fit],
        "items": [[i.role, i.key, i.source_start_s, i.frames, i.start_frame, i.creator, i.title]
                  for i in plan.items],
        "joins": [[j.effect, j.frames] for j in plan.joins],
        "music": music and [music.key, music.volume, music.duck, music.start_frame,
                            music.end_frame, music.fade_frames],
        "watermark": mark and [mark.key, mark.position, mark.width, mark.margin, mark.opacity,
                               mark.still],
    }  # fmt: skip
    return PlanFingerprint(
        total_frames=plan.total_frames,
        fps=f"{plan.fps.numerator}/{plan.fps.denominator}",
        width=plan.width,
        height=plan.height,
        codec=plan.codec,
        item_frames=tuple(item.frames for item in plan.items),
        digest=hashlib.sha256(json.dumps(decisions).encode()).hexdigest()[:32],
    )


def work_s(plan: RenderPlan) -> float:
    """How much encoding work ``plan`` is, in seconds of 1080p30 output (``item_cost``)."""
    return sum(plan.item_cost(item) for item in plan.items) / _SECOND_OF_1080P30


def parts_that_pay(plan: RenderPlan, renderers: int, *, min_work_s: float = MIN_PART_WORK_S) -> int:
    """How many parts ``plan`` is worth splitting into for ``renderers`` machines: at most one
    per machine and per item, each holding at least ``min_work_s`` seconds of 1080p30 encoding
    work (``item_cost``). 1 means: render it whole."""
    most = int(work_s(plan) // min_work_s) if min_work_s > 0 else renderers
    return max(1, min(renderers, len(plan.items), most))


def split_plan(
    plan: RenderPlan,
    renderers: int,
    *,
    parallel: int = 2,
    min_work_s: float = MIN_PART_WORK_S,
) -> list[Part]:
    """The parts of ``plan`` for ``renderers`` machines, each encoding ``parallel`` segments at
    once: ``parts_that_pay`` parts of about equal work, each a run of whole segments (a multiple
    of ``parallel`` of them where the items allow), so no transition is ever cut. One part (the
    whole video, in the segments ``render`` would encode with ``parallel``) when splitting does
    not pay. Pure: the same plan gives the same parts on any machine."""
    count = parts_that_pay(plan, renderers, min_work_s=min_work_s)
    parallel = max(1, parallel)
    segments = plan.segments(video_spans(plan, count * parallel, parallel))
    runs = balanced_runs([plan.segment_cost(seg) for seg in segments], count)
    fingerprint = plan_fingerprint(plan)
    parts = []
    for index, (first, last) in enumerate(runs):
        mine = segments[first : last + 1]
        parts.append(
            Part(
                index=index,
                of=count,
                segments=tuple((seg.item, seg.last_item) for seg in mine),
                start_frame=mine[0].start_frame,
                frames=sum(seg.frames for seg in mine),
                sources=_sources_read(plan, mine),
                plan=fingerprint,
            )
        )
    return parts


def _sources_read(plan: RenderPlan, segments: Sequence[Segment]) -> tuple[str, ...]:
    last = segments[-1].head_item
    last = segments[-1].last_item if last is None else last
    keys = [plan.items[k].key for k in range(segments[0].item, last + 1)]
    if plan.watermark is not None:
        keys.append(plan.watermark.key)
    return tuple(dict.fromkeys(keys))


def audio_sources(plan: RenderPlan) -> tuple[str, ...]:
    """The ``Source.key`` of every file the audio track reads: the items with sound, the
    music."""
    keys = [item.key for item in plan.items if item.info is None or item.info.has_audio]
    if plan.music is not None:
        keys.append(plan.music.key)
    return tuple(dict.fromkeys(keys))


def check_part(plan: RenderPlan, part: Part) -> list[Segment]:
    """The segments of ``part`` in ``plan`` (numbered from 0); ``PlanMismatch`` when ``part``
    was planned from other facts than ``plan``, or does not fit it."""
    name = f"part {part.index + 1} of {part.of}"
    check_fingerprint(plan, part.plan, name)
    spans = part.segments
    inside = all(0 <= first <= last < len(plan.items) for first, last in spans)
    in_order = all(spans[k][1] + 1 == spans[k + 1][0] for k in range(len(spans) - 1))
    if not spans or not inside or not in_order:
        raise PlanMismatch(f"{name} does not fit the plan: its segments {list(spans)} are not "
                           f"runs of the plan's {len(plan.items)} items in order")  # fmt: skip
    segments = plan.segments(spans)
    frames = sum(seg.frames for seg in segments)
    if (segments[0].start_frame, frames) != (part.start_frame, part.frames):
        start = segments[0].start_frame
        raise PlanMismatch(f"{name} does not fit the plan: it says frames {part.start_frame} to "
                           f"{part.end_frame}, its segments are frames {start} to "
                           f"{start + frames}")  # fmt: skip
    return segments


def check_fingerprint(plan: RenderPlan, fingerprint: PlanFingerprint, what: str) -> None:
    """``PlanMismatch`` saying what differs when ``plan`` is not the plan ``fingerprint`` was
    taken from; ``what`` names the piece asked for ("part 2 of 3")."""
    mine = plan_fingerprint(plan)
    if fingerprint != mine:
        raise PlanMismatch(f"{what} was planned from other facts than this machine's: "
                           f"{_difference(fingerprint, mine, plan)}; every machine must render "
                           "from the same files")  # fmt: skip


def _difference(theirs: PlanFingerprint, mine: PlanFingerprint, plan: RenderPlan) -> str:
    """What differs between two fingerprints, in words; ``mine`` is ``plan``'s."""
    output = lambda f: f"{f.width}x{f.height} {f.codec} at {f.fps} fps"  # noqa: E731
    if output(theirs) != output(mine):
        return f"the output is {output(mine)} here, {output(theirs)} where it was split"
    if len(theirs.item_frames) != len(mine.item_frames):
        return (f"the timeline has {len(mine.item_frames)} items here, "
                f"{len(theirs.item_frames)} where it was split")  # fmt: skip
    for item, here, there in zip(plan.items, mine.item_frames, theirs.item_frames, strict=True):
        if here != there:
            return f"{item.label} is {here} frames long here, {there} where it was split"
    if theirs.total_frames != mine.total_frames:
        return (f"the output is {mine.total_frames} frames long here, {theirs.total_frames} "
                "where it was split")  # fmt: skip
    return "its trims, transitions, overlays, music or watermark differ"


# ---------------------------------------------------------------- rendering the pieces


def render_part(
    compilation: Compilation,
    sources: Mapping[str, Path],
    part: Part,
    out: Path,
    *,
    media: Mapping[str, MediaInfo] | None = None,
    encoder: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    workdir: Path | None = None,
    parallel: int = 2,
    nice: bool = False,
) -> PartResult:
    """Render ``part`` of ``compilation`` to the picture-only mp4 ``out``: its segments
    (``parallel`` at a time, each encoded as ``render`` encodes it), joined by stream copy, and
    verified (size, rate, frame count, length).

    ``sources`` maps ``Source.key`` to local files and must hold every key of ``part.sources``;
    the plan needs the probe of every source, from a local file or from ``media`` (probes the
    caller has, e.g. the board's; used as given). ``encoder``, ``progress``, ``cancel``,
    ``workdir`` and ``nice`` are those of ``render``, with the same guarantees: nothing partial
    is left, every ffmpeg is killed on cancel or failure.

    Raises ``PlanMismatch`` (permanent) before encoding anything when this machine's plan is
    not the one ``part`` was cut from, ``RenderError`` when a source it reads was not given, and
    what ``render`` raises.
    """
    started = time.monotonic()
    chosen = encoder_for(compilation, encoder)
    parallel = max(1, parallel)
    with RenderSteps.begin(out, chosen, progress=progress, cancel=cancel, workdir=workdir,
                           nice=nice) as steps:  # fmt: skip
        plan, paths = steps.plan(compilation, sources, media)
        segments = check_part(plan, part)
        _require(compilation, paths, part.sources, f"part {part.index + 1} of {part.of}")
        tasks, files = steps.video_tasks(plan, paths, segments, threads_per_segment(parallel))
        join = steps.join_task(plan.fps, plan.codec, files, [seg.start_frame for seg in segments],
                               part.end_frame, audio=None, what="join of the part")  # fmt: skip
        steps.run_all(tasks, parallel)
        join()
        verified = verify_output(steps.hidden, planned_s=plan.seconds(part.frames),
                                 width=plan.width, height=plan.height, fps=float(plan.fps),
                                 frames=part.frames, audio=False)  # fmt: skip
        steps.publish()
    return PartResult(
        path=steps.out,
        index=part.index,
        frames=part.frames,
        duration_s=verified.video_duration_s or verified.duration_s or 0.0,
        size_bytes=steps.out.stat().st_size,
        encoder=chosen.name,
        render_s=time.monotonic() - started,
        stderr_tail=steps.stderr_tail(),
    )


def render_audio(
    compilation: Compilation,
    sources: Mapping[str, Path],
    out: Path,
    *,
    media: Mapping[str, MediaInfo] | None = None,
    fingerprint: PlanFingerprint | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    workdir: Path | None = None,
    nice: bool = False,
) -> AudioResult:
    """Render the whole audio track of ``compilation`` to the m4a ``out`` (AAC 48 kHz stereo),
    exactly as ``render`` makes it, and verify its length.

    ``sources`` must hold every key of ``audio_sources(plan)``; ``media`` is as for
    ``render_part``. With ``fingerprint`` (the parts' ``Part.plan``), ``PlanMismatch`` when
    this machine's plan differs. Same guarantees and errors as ``render``.
    """
    started = time.monotonic()
    with RenderSteps.begin(out, None, progress=progress, cancel=cancel, workdir=workdir,
                           nice=nice) as steps:  # fmt: skip
        plan, paths = steps.plan(compilation, sources, media)
        if fingerprint is not None:
            check_fingerprint(plan, fingerprint, "the audio track")
        _require(compilation, paths, audio_sources(plan), "the audio track")
        steps.run_all([steps.audio_task(plan, paths, steps.hidden)], 1)
        verified = verify_audio(steps.hidden, planned_s=plan.planned_s)
        steps.publish()
    return AudioResult(
        path=steps.out,
        duration_s=verified.audio_duration_s or verified.duration_s or 0.0,
        size_bytes=steps.out.stat().st_size,
        render_s=time.monotonic() - started,
        stderr_tail=steps.stderr_tail(),
    )


def _require(
    compilation: Compilation, paths: Mapping[str, Path], keys: Sequence[str], what: str
) -> None:
    missing = [key for key in keys if key not in paths]
    if missing:
        labels = source_labels(compilation)
        raise RenderError(f"{what} reads {', '.join(labels.get(k, k) for k in missing)}, but no "
                          "local file was given for it")  # fmt: skip


# ---------------------------------------------------------------- joining


def join_parts(
    parts: Sequence[Part],
    files: Sequence[Path],
    audio: Path,
    out: Path,
    *,
    thumbnail: Path | None = None,
    thumbnail_at_s: float | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    workdir: Path | None = None,
    nice: bool = False,
) -> RenderResult:
    """Join the rendered ``parts`` (``files[k]`` holding ``parts[k]``, in any order) and the
    audio track ``audio`` by stream copy into the mp4 ``out`` (``+faststart``), and verify it as
    ``render`` verifies its output: size, rate, length, frame count, and sound ending within one
    AAC frame of the picture. ``thumbnail``, if given, receives a JPEG at ``thumbnail_at_s``
    (default: the middle; ``render`` takes ``render.thumbnail_at(plan)``).

    Every piece is checked first: the parts must be all of one split (one fingerprint, each
    index once), each file a picture-only mp4 of its part's frames starting on a keyframe, all
    encoded alike (codec, profile, pixel format, stream headers) so a stream copy is valid; the
    audio must last the planned length. A piece that does not fit raises ``PartRejected``
    naming it (``part``: its index, None for the audio); other failures are ``RenderError``, a
    cancel ``RenderCancelled``. Nothing partial is left.
    """
    started = time.monotonic()
    order = sorted(range(len(parts)), key=lambda k: parts[k].index)
    parts, files = [parts[k] for k in order], [Path(files[k]) for k in order]
    fingerprint = _check_split(parts, files)
    encoded = _check_part_files(parts, files)
    planned_s = fingerprint.total_frames / fingerprint.rate
    try:
        verify_audio(audio, planned_s=float(planned_s))
    except RenderError as exc:
        raise PartRejected(f"the audio track does not fit: {exc.message}", part=None) from exc
    with RenderSteps.begin(out, None, progress=progress, cancel=cancel, workdir=workdir,
                           nice=nice, thumbnail=thumbnail) as steps:  # fmt: skip
        starts = [part.start_frame for part in parts]
        join = steps.join_task(fingerprint.rate, fingerprint.codec, files, starts,
                               fingerprint.total_frames, audio=Path(audio), what="final join",
                               listing="parts.txt")  # fmt: skip
        join()
        verified = verify_output(steps.hidden, planned_s=float(planned_s),
                                 width=fingerprint.width, height=fingerprint.height,
                                 fps=float(fingerprint.rate),
                                 frames=fingerprint.total_frames)  # fmt: skip
        steps.publish(float(planned_s) / 2 if thumbnail_at_s is None else thumbnail_at_s)
    return RenderResult(
        path=steps.out,
        duration_s=verified.video_duration_s or verified.duration_s or 0.0,
        planned_s=float(planned_s),
        width=verified.width,
        height=verified.height,
        fps=verified.fps,
        size_bytes=steps.out.stat().st_size,
        encoder=encoded,
        render_s=time.monotonic() - started,
        thumbnail=thumbnail,
        stderr_tail=steps.stderr_tail(),
    )


def _check_split(parts: Sequence[Part], files: Sequence[Path]) -> PlanFingerprint:
    """The fingerprint of ``parts`` (sorted by index) when they are every part of one split,
    in order, covering its frames once; ``PartRejected`` naming the first that is not."""
    if not parts or len(parts) != len(files):
        raise RenderError(f"the join was given {len(parts)} parts and {len(files)} files")
    fingerprint = parts[0].plan
    at = 0
    for expected, part in enumerate(parts):
        name = f"part {part.index + 1} of {part.of}"
        if part.plan != fingerprint or part.of != len(parts):
            raise PartRejected(f"{name} belongs to another split of the job than part 1 of "
                               f"{parts[0].of} ({len(parts)} parts given)",
                               part=part.index)  # fmt: skip
        if part.index != expected or part.start_frame != at:
            raise PartRejected(f"{name} starts at frame {part.start_frame}, but the parts before "
                               f"it end at frame {at}", part=part.index)  # fmt: skip
        at = part.end_frame
    if at != fingerprint.total_frames:
        raise PartRejected(f"the parts end at frame {at}, the video at frame "
                           f"{fingerprint.total_frames}", part=parts[-1].index)  # fmt: skip
    return fingerprint


# What must be the same in every part for their packets to play as one stream.
_STREAM_FACTS = ("codec_name", "profile", "pix_fmt", "width", "height", "time_base",
                 "extradata_hash")  # fmt: skip


def _check_part_files(parts: Sequence[Part], files: Sequence[Path]) -> str:
    """Check each file holds its part, all encoded alike; the encoder that made them."""
    first: dict | None = None
    for part, path in zip(parts, files, strict=True):
        name = f"part {part.index + 1} of {part.of}"
        stream, packet = _part_stream(path, name, part.index)
        problems = []
        if stream.get("codec_name") != part.plan.codec:
            problems.append(f"it is {stream.get('codec_name')}, not {part.plan.codec}")
        if (stream.get("width"), stream.get("height")) != (part.plan.width, part.plan.height):
            problems.append(f"its size is {stream.get('width')}x{stream.get('height')}")
        if str(stream.get("nb_frames")) != str(part.frames):
            problems.append(f"it holds {stream.get('nb_frames')} frames, planned {part.frames}")
        if "K" not in str(packet.get("flags", "")):
            problems.append("it does not start on a keyframe")
        if first is not None:
            differ = [fact for fact in _STREAM_FACTS if stream.get(fact) != first.get(fact)]
            if differ:
                problems.append(f"it is encoded unlike part 1 ({', '.join(differ)} differ); "
                                "every part must come from the same encoder and "
                                "settings")  # fmt: skip
        if problems:
            raise PartRejected(f"{name} does not fit: " + "; ".join(problems), part=part.index)
        first = first or stream
    assert first is not None
    return str((first.get("tags") or {}).get("encoder", "")).rsplit(" ", 1)[-1]


def _part_stream(path: Path, name: str, index: int) -> tuple[dict, dict]:
    """ffprobe's video stream of a part file and its first packet. Parts come from other
    machines: opened as the renderer's own mp4 only, never followed anywhere else."""
    cmd = [ffprobe_binary(), "-v", "error", "-of", "json", "-select_streams", "v:0",
           "-show_streams", "-show_data_hash", "SHA256", "-show_entries", "packet=flags",
           "-read_intervals", "%+#1", *own_input(path, "mov")]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=PART_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PartRejected(f"{name}: ffprobe could not read it ({exc})", part=index) from exc
    try:
        found = json.loads(done.stdout or b"{}") if done.returncode == 0 else {}
    except json.JSONDecodeError:
        found = {}
    streams, packets = found.get("streams") or [], found.get("packets") or []
    if not streams or not packets:
        why = done.stderr.decode("utf-8", "replace").strip()[-300:] or "it holds no picture"
        raise PartRejected(f"{name}: not a readable video ({why})", part=index)
    return streams[0], packets[0]
