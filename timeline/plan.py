"""The render plan: a compilation and its probed media turned into frames and samples.

Everything the renderer does is decided here, once, in whole frames of the output: which item
plays when, how long each transition overlaps its neighbours, which effect and stinger each join
got, where the music starts and stops. Audio offsets are derived from the same frame numbers
(``RenderPlan.sample_at``), so video and audio agree to the sample and no drift accumulates.

Rules (docs/architecture.md, "The compilation and the timeline"):

- Order: intro, clips, outro. Every pair of neighbours is joined by an xfade of the transition
  ``duration`` (0 means hard cuts). When stingers are given, each join *between two clips* plays
  one instead (cut in, cut out); intro and outro joins keep the xfade.
- A transition never overlaps more than half of either neighbour, so a clip shorter than its
  transitions gets shorter ones; no clip is ever dropped.
- ``order: sequence`` cycles through ``effects`` (the i-th xfade join uses ``effects[i % n]``)
  and ``stingers`` as written; ``order: random`` draws each join's effect and stinger with
  ``random.Random(seed)``, ``seed`` None meaning 0.
- Music plays under the clips only: from the first clip's first frame to the outro's first frame
  (or the end), fading out over ``fade_out`` seconds that end where the outro begins.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from timeline.errors import InputError, RenderError
from timeline.probe import MediaInfo
from timeline.spec import Clip, Compilation, Source, Transitions

SAMPLE_RATE = 48_000
# An `end` trim this far past a clip's end is taken as "to the end"; further is an error.
TRIM_SLACK_S = 0.5
# Decoding a pixel costs about a tenth of encoding one (h264 decode vs x264 medium).
DECODE_COST = 0.1
BLUR_COST = 0.1
# Standard broadcast rates written as decimals map to their exact fractions.
_NTSC_RATES = {23.976: Fraction(24000, 1001), 29.97: Fraction(30000, 1001),
               59.94: Fraction(60000, 1001), 119.88: Fraction(120000, 1001)}  # fmt: skip


# ---------------------------------------------------------------- the plan's parts


@dataclass(frozen=True)
class JoinChoice:
    """What ``transitions`` chose for one join between neighbours (intro, clips, outro):
    an xfade ``effect`` or a ``stinger`` (its ``Source.key``); both None for a hard cut."""

    index: int  # the join between neighbour ``index`` and ``index + 1``
    between: tuple[str, str]  # roles of the neighbours, e.g. ("clip", "outro")
    effect: str | None
    stinger: str | None


@dataclass(frozen=True)
class PlanItem:
    """One picture on the timeline: intro, a clip, a stinger or the outro.

    It shows ``frames`` frames of its source from ``source_start_s``, beginning at output frame
    ``start_frame``; its first/last frames may be blended with its neighbours by transitions.
    """

    role: str  # "intro" | "clip" | "stinger" | "outro"
    key: str  # Source.key
    label: str  # for people: 'clip 3 (https://…/a.mp4)'
    source_start_s: float
    frames: int
    start_frame: int
    creator: str | None = None
    title: str | None = None
    info: MediaInfo | None = field(default=None, compare=False, repr=False)

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.frames


@dataclass(frozen=True)
class PlanJoin:
    """How item ``index`` hands over to item ``index + 1``: an xfade ``effect`` overlapping
    ``frames`` frames of both, or a hard cut (``effect`` None, ``frames`` 0)."""

    index: int
    effect: str | None
    frames: int


@dataclass(frozen=True)
class MusicPlan:
    """The music bed: looped from output frame ``start_frame`` to ``end_frame``, fading out over
    its last ``fade_frames``; ducked under the clips' own sound when ``duck``."""

    key: str
    label: str
    volume: float
    duck: bool
    start_frame: int
    end_frame: int
    fade_frames: int
    info: MediaInfo | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class WatermarkPlan:
    """The watermark over the whole output, ``width`` pixels wide at (``x``, ``y``) pixels from
    the top-left corner, the right or bottom edge depending on ``position``."""

    key: str
    label: str
    position: str
    width: int
    margin: int
    opacity: float
    still: bool  # an image: one picture held for the whole render; else a looped video
    info: MediaInfo | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Segment:
    """One separately encoded piece of the video: items ``item`` to ``last_item``, from frame
    ``skip`` of the first (after its incoming transition) to the end of the last, the items
    inside joined as the plan says; blended over its last ``head_frames`` frames with the first
    ``head_frames`` frames of the next item (the outgoing xfade). Output: ``frames`` frames."""

    index: int
    item: int
    skip: int
    frames: int
    start_frame: int  # first output frame of this segment
    head_frames: int = 0
    effect: str | None = None
    last: int | None = None  # the last item, when the segment holds several

    @property
    def last_item(self) -> int:
        return self.item if self.last is None else self.last

    @property
    def item_range(self) -> range:
        return range(self.item, self.last_item + 1)

    @property
    def head_item(self) -> int | None:
        return self.last_item + 1 if self.head_frames else None


@dataclass(frozen=True)
class RenderPlan:
    """Everything the renderer needs, in frames of the output (``fps``)."""

    width: int
    height: int
    fps: Fraction
    fit: str
    codec: str
    quality: str
    items: tuple[PlanItem, ...]
    joins: tuple[PlanJoin, ...]
    choices: tuple[JoinChoice, ...]
    total_frames: int
    music: MusicPlan | None = None
    watermark: WatermarkPlan | None = None

    @property
    def planned_s(self) -> float:
        """The output's planned length in seconds."""
        return float(self.total_frames / self.fps)

    def seconds(self, frames: int) -> float:
        """``frames`` output frames in seconds."""
        return float(frames / self.fps)

    def sample_at(self, frame: int) -> int:
        """The audio sample where output frame ``frame`` begins. Every audio offset is computed
        from this one rounding, so rounding never adds up along the timeline."""
        return round(frame * SAMPLE_RATE / self.fps)

    def segments(self, spans: Sequence[tuple[int, int]] | None = None) -> list[Segment]:
        """The video in independently encodable pieces (see ``Segment``): one per run of items
        in ``spans`` (first, last inclusive, covering every item in order), by default one per
        item."""
        if spans is None:
            spans = [(k, k) for k in range(len(self.items))]
        found = []
        for index, (first, last) in enumerate(spans):
            skip = self.joins[first - 1].frames if first > 0 else 0
            out = self.joins[last] if last < len(self.joins) else None
            start = self.items[first].start_frame + skip
            found.append(
                Segment(
                    index=index,
                    item=first,
                    skip=skip,
                    frames=self.items[last].end_frame - start,
                    start_frame=start,
                    head_frames=out.frames if out else 0,
                    effect=out.effect if out and out.frames else None,
                    last=last if last != first else None,
                )
            )
        return found

    def balanced_spans(
        self, parts: int, weights: Sequence[float] | None = None, max_weight: float = math.inf
    ) -> list[tuple[int, int]]:
        """Runs of consecutive items (first, last) for ``segments``: a multiple of ``parts``
        runs of about equal work (``item_cost``), so ``parts`` encoders, started longest
        first, end about together. ``weights`` (one per item) add up to at most
        ``max_weight`` in every run, counting the next item when the run ends in an xfade,
        unless the run is a single item."""
        costs = [self.item_cost(item) for item in self.items]
        weights = list(weights) if weights is not None else [0.0] * len(self.items)
        count = min(len(self.items), max(1, parts))
        while True:
            spans = balanced_runs(costs, count)
            if count >= len(self.items) or all(
                a == b or self._span_weight(weights, a, b) <= max_weight for a, b in spans
            ):
                return spans
            count = min(len(self.items), count + max(1, parts))

    def _span_weight(self, weights: list[float], first: int, last: int) -> float:
        head = weights[last + 1] if last < len(self.joins) and self.joins[last].frames else 0.0
        return sum(weights[first : last + 1]) + head

    def item_cost(self, item: PlanItem) -> float:
        """Roughly how much work ``item`` is, in output pixels encoded: its own frames, the
        pixels decoded from its source (about a tenth as costly each), a blurred fill (a
        tenth more)."""
        pixels = self.width * self.height
        cost = float(item.frames * pixels)
        info = item.info
        if info is None or not info.has_video:
            return cost
        rate = info.fps / float(self.fps) if info.fps > 0 else 1.0
        cost += DECODE_COST * item.frames * max(rate, 1.0) * info.width * info.height
        if self.fit == "blur" and abs(info.display_aspect - self.width / self.height) > 0.02:
            cost += BLUR_COST * item.frames * pixels
        return cost

    def segment_cost(self, segment: Segment) -> float:
        """``item_cost`` of the items ``segment`` holds."""
        return sum(self.item_cost(self.items[k]) for k in segment.item_range)


def balanced_runs(costs: Sequence[float], count: int) -> list[tuple[int, int]]:
    """``count`` runs (first, last inclusive) of consecutive entries of ``costs`` that add up
    to about the same, each cut placed where the running sum comes nearest to its share of the
    total; every run holds at least one entry (``count`` at most ``len(costs)``)."""
    total = sum(costs)
    spans, first, done = [], 0, 0.0
    for part in range(1, count):
        target = total * part / count
        last = first
        done += costs[last]
        # take the next item while that brings the sum nearer the target, leaving one item
        # for each part still to come
        while last + 1 < len(costs) - (count - part) and abs(done + costs[last + 1] - target) < abs(
            done - target
        ):
            last += 1
            done += costs[last]
        spans.append((first, last))
        first = last + 1
    spans.append((first, len(costs) - 1))
    return spans


# ---------------------------------------------------------------- choosing transitions


def output_fps(fps: float) -> Fraction:
    """The output rate as an exact fraction (29.97 means 30000/1001)."""
    for decimal, exact in _NTSC_RATES.items():
        if abs(fps - decimal) < 0.0005:
            return exact
    return Fraction(fps).limit_denominator(1001)


def choose_joins(transitions: Transitions, roles: list[str]) -> list[JoinChoice]:
    """Pick the effect or stinger of every join between neighbours of roles ``roles``
    (e.g. ``["intro", "clip", "clip", "outro"]``), following ``transitions.order``.

    Deterministic: the same transitions (and seed) always give the same choices."""
    rng = random.Random(transitions.seed if transitions.seed is not None else 0)
    effects = list(transitions.effects) or [transitions.effect]
    stingers = [s.key for s in transitions.stingers]
    shuffled = transitions.order == "random"
    choices: list[JoinChoice] = []
    xfades = stinger_joins = 0
    for index in range(len(roles) - 1):
        between = (roles[index], roles[index + 1])
        effect = stinger = None
        if stingers and between == ("clip", "clip"):
            stinger = rng.choice(stingers) if shuffled else stingers[stinger_joins % len(stingers)]
            stinger_joins += 1
        elif transitions.duration > 0:
            effect = rng.choice(effects) if shuffled else effects[xfades % len(effects)]
            xfades += 1
        choices.append(JoinChoice(index=index, between=between, effect=effect, stinger=stinger))
    return choices


# ---------------------------------------------------------------- frame layout


@dataclass(frozen=True)
class _Entry:
    role: str
    source: Source
    label: str
    clip: Clip | None = None


def _neighbours(compilation: Compilation) -> list[_Entry]:
    entries = []
    if compilation.intro is not None:
        entries.append(_Entry("intro", compilation.intro, _label("intro", compilation.intro)))
    for n, clip in enumerate(compilation.clips, start=1):
        entries.append(_Entry("clip", clip, _label(f"clip {n}", clip), clip))
    if compilation.outro is not None:
        entries.append(_Entry("outro", compilation.outro, _label("outro", compilation.outro)))
    return entries


def _timeline(
    compilation: Compilation,
) -> tuple[list[_Entry], list[float | None], list[JoinChoice]]:
    """The entries in play order (stingers inserted), each join's requested overlap in seconds
    (None for cuts), and the choices made per join between neighbours."""
    neighbours = _neighbours(compilation)
    choices = choose_joins(compilation.transitions, [e.role for e in neighbours])
    stingers = {s.key: (i, s) for i, s in enumerate(compilation.transitions.stingers, start=1)}
    entries: list[_Entry] = [neighbours[0]]
    overlaps: list[float | None] = []
    for choice, after in zip(choices, neighbours[1:], strict=True):
        if choice.stinger is not None:
            number, source = stingers[choice.stinger]
            entries.append(_Entry("stinger", source, _label(f"stinger {number}", source)))
            overlaps += [None, None]
        else:
            overlaps.append(compilation.transitions.duration if choice.effect else None)
        entries.append(after)
    return entries, overlaps, choices


def _frames(used_s: float, fps: Fraction) -> int:
    """Whole output frames for ``used_s`` seconds of a source; at least one."""
    return max(1, round(used_s * fps))


def _clamp_overlaps(frames: list[int], requested: list[float | None], fps: Fraction) -> list[int]:
    """Requested transition lengths in frames, never more than half of either neighbour."""
    return [
        0 if seconds is None else min(round(seconds * fps), frames[i] // 2, frames[i + 1] // 2)
        for i, seconds in enumerate(requested)
    ]


def _starts(frames: list[int], overlaps: list[int]) -> tuple[list[int], int]:
    starts, at = [], 0
    for i, n in enumerate(frames):
        starts.append(at)
        at += n - (overlaps[i] if i < len(overlaps) else 0)
    return starts, at


def _used_seconds(length_s: float, clip: Clip | None) -> tuple[float, float]:
    """(start in the source, seconds used) after the clip's trims, clamped to the source."""
    start = (clip.start or 0.0) if clip else 0.0
    end = clip.end if clip and clip.end is not None else length_s
    end = min(end, length_s)
    return start, max(0.0, end - start)


def estimate_duration(
    compilation: Compilation,
    durations: Mapping[str, float | None],
    unknown_s: float = 30.0,
) -> float:
    """The planned output length in seconds, from known source lengths.

    ``durations`` maps ``Source.key`` to seconds, or None when unknown (a URL not fetched yet):
    an unknown clip counts as ``unknown_s`` (or its trimmed length when both trims are given).
    Trims, transition clamping and stingers apply exactly as in the real plan. Pure: no ffprobe.
    """
    fps = output_fps(compilation.output.fps)
    entries, requested, _ = _timeline(compilation)
    frames = []
    for entry in entries:
        length = durations.get(entry.source.key)
        clip = entry.clip
        if length is None:
            has_both = clip is not None and clip.end is not None
            length = clip.end if has_both else unknown_s + ((clip.start or 0.0) if clip else 0.0)
        frames.append(_frames(_used_seconds(float(length), clip)[1], fps))
    overlaps = _clamp_overlaps(frames, requested, fps)
    return float(_starts(frames, overlaps)[1] / fps)


# ---------------------------------------------------------------- the real plan


def render_plan(compilation: Compilation, media: Mapping[str, MediaInfo]) -> RenderPlan:
    """The render plan of ``compilation``; ``media`` maps every ``Source.key`` of
    ``compilation.sources()`` to its probe.

    Raises ``InputError`` naming the source when one cannot play its part (a clip without
    video, a still image as a clip, a trim past the end, music without sound).
    """
    out = compilation.output
    fps = output_fps(out.fps)
    entries, requested, choices = _timeline(compilation)
    frames, starts_in_source = [], []
    for entry in entries:
        info = _info(media, entry.source, entry.label)
        _require_video(info, entry)
        length = info.video_length_s
        if not length:
            raise InputError(f"{entry.label}: cannot tell how long it is; the file is probably "
                             "damaged", source_key=entry.source.key, label=entry.label)  # fmt: skip
        _check_trims(entry, length)
        start, used = _used_seconds(length, entry.clip)
        frames.append(_frames(used, fps))
        starts_in_source.append(start)
    overlaps = _clamp_overlaps(frames, requested, fps)
    starts, total = _starts(frames, overlaps)

    effects = iter(c.effect for c in choices if c.stinger is None)
    joins = []
    for i, overlap in enumerate(overlaps):
        # stinger joins are cuts and were never given an effect; the rest take theirs in order
        is_stinger_join = entries[i].role == "stinger" or entries[i + 1].role == "stinger"
        effect = None if is_stinger_join else next(effects)
        joins.append(PlanJoin(index=i, effect=effect if overlap else None, frames=overlap))

    items = tuple(
        PlanItem(
            role=entry.role,
            key=entry.source.key,
            label=entry.label,
            source_start_s=starts_in_source[i],
            frames=frames[i],
            start_frame=starts[i],
            creator=_text(entry.clip.creator) if entry.clip else None,
            title=_text(entry.clip.title) if entry.clip else None,
            info=media[entry.source.key],
        )
        for i, entry in enumerate(entries)
    )
    return RenderPlan(
        width=out.width,
        height=out.height,
        fps=fps,
        fit=compilation.fit,
        codec=out.codec,
        quality=out.quality,
        items=items,
        joins=tuple(joins),
        choices=tuple(choices),
        total_frames=total,
        music=_music_plan(compilation, media, items, total, fps),
        watermark=_watermark_plan(compilation, media),
    )


def _music_plan(
    compilation: Compilation,
    media: Mapping[str, MediaInfo],
    items: tuple[PlanItem, ...],
    total: int,
    fps: Fraction,
) -> MusicPlan | None:
    music = compilation.music
    if music is None:
        return None
    label = _label("music", music)
    info = _info(media, music, label)
    if not info.has_audio:
        raise InputError(f"{label}: has no sound", source_key=music.key, label=label)
    clips = [item for item in items if item.role == "clip"]
    start = clips[0].start_frame
    end = items[-1].start_frame if items[-1].role == "outro" else total
    fade = min(round(music.fade_out * fps), end - start)
    return MusicPlan(
        key=music.key,
        label=label,
        volume=music.volume,
        duck=music.duck,
        start_frame=start,
        end_frame=end,
        fade_frames=fade,
        info=info,
    )


def _watermark_plan(
    compilation: Compilation, media: Mapping[str, MediaInfo]
) -> WatermarkPlan | None:
    mark = compilation.watermark
    if mark is None:
        return None
    label = _label("watermark", mark)
    info = _info(media, mark, label)
    if not info.has_video:
        raise InputError(f"{label}: is not a picture (no video stream)", source_key=mark.key,
                         label=label)  # fmt: skip
    width = compilation.output.width
    return WatermarkPlan(
        key=mark.key,
        label=label,
        position=mark.position,
        width=max(2, round(mark.size * width / 2) * 2),
        margin=round(mark.margin * width),
        opacity=mark.opacity,
        still=info.image or not info.video_length_s,
        info=info,
    )


def _info(media: Mapping[str, MediaInfo], source: Source, label: str) -> MediaInfo:
    try:
        return media[source.key]
    except KeyError:
        raise RenderError(f"{label}: no local file was given for it") from None


def _require_video(info: MediaInfo, entry: _Entry) -> None:
    if not info.has_video:
        raise InputError(f"{entry.label}: has no video stream", source_key=entry.source.key,
                         label=entry.label)  # fmt: skip
    if info.image:
        raise InputError(f"{entry.label}: is a still image; an {entry.role} must be a video",
                         source_key=entry.source.key, label=entry.label)  # fmt: skip


def _check_trims(entry: _Entry, length: float) -> None:
    clip = entry.clip
    if clip is None:
        return
    where = f"{entry.label}: the clip is {length:.2f} s long"
    if clip.start is not None and clip.start >= length:
        raise InputError(f"{where}, so `start` {clip.start:g} s is past its end",
                         source_key=entry.source.key, label=entry.label)  # fmt: skip
    if clip.end is not None and clip.end > length + TRIM_SLACK_S:
        raise InputError(f"{where}, so `end` {clip.end:g} s is past its end",
                         source_key=entry.source.key, label=entry.label)  # fmt: skip


def _text(value: str | None) -> str | None:
    return value if value and value.strip() else None


def _label(role: str, source: Source) -> str:
    """'clip 3 (https://example.com/a.mp4)': how people recognise a source."""
    if source.url is not None:
        origin = source.url
    elif source.path is not None:
        origin = source.path
    else:
        origin = f"media {source.media}"
    return f"{role} ({origin})"


def source_labels(compilation: Compilation) -> dict[str, str]:
    """``Source.key`` -> how people recognise it, by its first role in the compilation."""
    labels: dict[str, str] = {}
    for entry in _neighbours(compilation):
        labels.setdefault(entry.source.key, entry.label)
    for number, stinger in enumerate(compilation.transitions.stingers, start=1):
        labels.setdefault(stinger.key, _label(f"stinger {number}", stinger))
    for role, source in (("watermark", compilation.watermark), ("music", compilation.music)):
        if source is not None:
            labels.setdefault(source.key, _label(role, source))
    return labels
