"""The compilation spec: what a job renders.

These msgspec structs are the one definition of a compilation. The board validates submissions
with them, the wire contract carries them to farmhands, and the renderer plans from them. Field
names follow docs/architecture.md ("The compilation and the timeline"). Validation errors name the path of the bad field
(``$.clips[2].start``) so a submitter knows which clip is wrong.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec
from msgspec import Meta, Struct

Codec = Literal["h264", "hevc", "av1"]
CODECS: tuple[str, ...] = get_args(Codec)  # every output codec, for code that lists them
Quality = Literal["draft", "standard", "high"]
Fit = Literal["contain", "cover", "blur"]
Order = Literal["sequence", "random"]
Position = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]

# xfade effects that every supported ffmpeg (5.1+) knows; "custom" needs expressions we don't take.
XFADE_EFFECTS = frozenset(
    "fade wipeleft wiperight wipeup wipedown slideleft slideright slideup slidedown circlecrop "
    "rectcrop distance fadeblack fadewhite radial smoothleft smoothright smoothup smoothdown "
    "circleopen circleclose vertopen vertclose horzopen horzclose dissolve pixelize diagtl diagtr "
    "diagbl diagbr hlslice hrslice vuslice vdslice hblur fadegrays wipetl wipetr wipebl wipebr "
    "squeezeh squeezev zoomin".split()
)

Seconds = Annotated[float, Meta(ge=0, le=86_400)]
Text = Annotated[str, Meta(max_length=500)]
MediaId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Url = Annotated[str, Meta(min_length=8, max_length=2048, pattern=r"^https?://")]
RelPath = Annotated[str, Meta(min_length=1, max_length=1024)]


class SpecError(ValueError):
    """A compilation that cannot be rendered as written (the submitter's fault, permanent)."""


class Source(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Where a piece of media comes from: exactly one of ``media`` (board media id), ``url``
    (fetched by the farmhand, through yt-dlp for pages) or ``path`` (local renders only)."""

    media: MediaId | None = None
    url: Url | None = None
    path: RelPath | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("media", "url", "path") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "a source needs exactly one of `media`, `url` or `path`"
                + (f" (got {', '.join(given)})" if given else "")
            )

    @property
    def key(self) -> str:
        """A stable identity for this source (used to fetch each one once)."""
        if self.media is not None:
            return f"media:{self.media}"
        if self.url is not None:
            return f"url:{self.url}"
        return f"path:{self.path}"


class Clip(Source, forbid_unknown_fields=True, omit_defaults=True):
    """One clip of the compilation, optionally trimmed and captioned."""

    start: Seconds | None = None
    end: Seconds | None = None
    creator: Text | None = None
    title: Text | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"`end` ({self.end}) must be after `start` ({self.start})")


class Output(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The rendered file: mp4 (faststart), AAC 48 kHz stereo, constant fps."""

    width: Annotated[int, Meta(ge=64, le=7680)] = 1280
    height: Annotated[int, Meta(ge=64, le=4320)] = 720
    fps: Annotated[float, Meta(ge=1, le=120)] = 30
    codec: Codec = "h264"
    quality: Quality = "standard"

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2:
            raise ValueError(
                f"output size must be even in both directions (got {self.width}x{self.height})"
            )


class Transitions(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How neighbours are joined: an xfade of ``duration`` and/or stingers between clips.

    ``effects``, when given, replaces ``effect``: the i-th xfade join uses ``effects[i % n]``.
    ``order`` is about the transitions, never the clips (clips always keep their order):
    ``sequence`` cycles through ``effects`` and ``stingers`` as written; ``random`` draws each
    join's effect and stinger with ``random.Random(seed)`` (``seed`` None means 0), so the same
    seed always gives the same choices.
    """

    effect: str = "fade"
    duration: Annotated[float, Meta(ge=0, le=10)] = 0.5
    stingers: Annotated[list[Source], Meta(max_length=50)] = []
    order: Order = "sequence"
    seed: int | None = None
    effects: Annotated[list[str], Meta(max_length=50)] = []

    def __post_init__(self) -> None:
        for name, value in [("effect", self.effect)] + [
            (f"effects[{i}]", e) for i, e in enumerate(self.effects)
        ]:
            if value not in XFADE_EFFECTS:
                raise ValueError(
                    f"unknown transition {name} {value!r}; known: "
                    + ", ".join(sorted(XFADE_EFFECTS))
                )


class Watermark(Source, forbid_unknown_fields=True, omit_defaults=True):
    """An image (or video) laid over the whole compilation."""

    position: Position = "bottom-right"
    opacity: Annotated[float, Meta(ge=0, le=1)] = 0.5
    size: Annotated[float, Meta(gt=0, le=1)] = 0.15  # width as a fraction of the output width
    margin: Annotated[float, Meta(ge=0, le=0.25)] = 0.02  # fraction of the output width


class Music(Source, forbid_unknown_fields=True, omit_defaults=True):
    """A track looped under the clips, ducked under speech, faded out before the outro."""

    volume: Annotated[float, Meta(ge=0, le=2)] = 0.25
    duck: bool = True
    fade_out: Annotated[float, Meta(ge=0, le=30)] = 2.0


class Compilation(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """intro → clips (joined by transitions/stingers) → outro, with optional watermark and music."""

    clips: Annotated[list[Clip], Meta(min_length=1, max_length=1000)]
    title: Text = ""
    output: Output = msgspec.field(default_factory=Output)
    intro: Source | None = None
    outro: Source | None = None
    transitions: Transitions = msgspec.field(default_factory=Transitions)
    fit: Fit = "contain"
    watermark: Watermark | None = None
    music: Music | None = None

    def sources(self) -> list[Source]:
        """Every source this compilation reads, in timeline order, each once."""
        found: dict[str, Source] = {}
        items: list[Source | None] = [self.intro, *self.clips, self.outro]
        items += list(self.transitions.stingers)
        items += [self.watermark, self.music]
        for item in items:
            if item is not None and item.key not in found:
                found[item.key] = item
        return list(found.values())


def parse_compilation(raw: bytes | str | dict) -> Compilation:
    """Decode and validate a compilation; raises SpecError with the path of the bad field."""
    try:
        if isinstance(raw, dict):
            return msgspec.convert(raw, Compilation)
        return msgspec.json.decode(raw, type=Compilation)
    except msgspec.ValidationError as exc:
        raise SpecError(f"invalid compilation: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise SpecError(f"compilation is not valid JSON: {exc}") from exc
