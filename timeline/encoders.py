"""The encoder table: every encoder clipfarm can use and how a ``quality`` maps to its own knobs.

One row per ffmpeg encoder. To support another encoder, add a row to ``ENCODERS`` (and, when its
knobs differ from every existing family, a branch in ``Encoder.quality_args``). Everything else
(the farmhand's capability probe, the renderer, the board's matching) reads this table.

Segments of one render are encoded separately and joined by stream copy, so every argument here
must be deterministic for a given ``quality`` and ``fps`` (no per-run values).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from timeline.spec import Quality

QUALITIES: tuple[Quality, ...] = ("draft", "standard", "high")

# The VAAPI render node; most single-GPU Linux machines have exactly this one.
DEFAULT_VAAPI_DEVICE = "/dev/dri/renderD128"


@dataclass(frozen=True)
class Encoder:
    """One ffmpeg video encoder and how to drive it."""

    name: str  # ffmpeg encoder name, e.g. "h264_nvenc"
    codec: str  # "h264" | "hevc" | "av1"
    hardware: bool
    family: str  # "software" | "nvenc" | "qsv" | "vaapi" | "amf" | "videotoolbox"
    rank: int  # preference among encoders of one codec; lower is preferred (hardware first)
    # quality -> the encoder's own knobs (preset/crf/cq/qp...), see the table below
    knobs: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    def global_args(self) -> list[str]:
        """ffmpeg arguments that must come before the inputs (hardware device set-up)."""
        if self.family == "vaapi":
            device = os.environ.get("FFMPEG_VAAPI_DEVICE", DEFAULT_VAAPI_DEVICE)
            return ["-vaapi_device", device]
        if self.family == "qsv":
            return ["-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"]
        return []

    def upload_filter(self) -> str:
        """Filters appended to the video chain to hand frames to the encoder ("" when none)."""
        if self.family == "vaapi":
            return "format=nv12,hwupload"
        if self.family == "qsv":
            return "format=nv12,hwupload=extra_hw_frames=64"
        return ""

    def output_args(self, quality: str, fps: float) -> list[str]:
        """Codec arguments for ``quality`` (draft/standard/high): encoder, knobs, pixel format,
        a GOP of two seconds, and the mp4 tag players expect."""
        if quality not in self.knobs:
            raise ValueError(f"unknown quality {quality!r}; known: {', '.join(QUALITIES)}")
        args = ["-c:v", self.name, *self.knobs[quality]]
        if not self.upload_filter():
            # hardware-uploaded frames carry their own format; software input needs one stated
            args += ["-pix_fmt", "yuv420p"]
        args += ["-g", str(max(1, math.ceil(fps * 2)))]
        if self.codec == "hevc":
            args += ["-tag:v", "hvc1"]  # Apple players refuse the default hev1 tag
        return args


def _knobs(draft: str, standard: str, high: str) -> dict[str, tuple[str, ...]]:
    return {"draft": tuple(draft.split()), "standard": tuple(standard.split()),
            "high": tuple(high.split())}  # fmt: skip


# x264 keeps its lookahead's pictures (full size, half-pel planes, low-res copies) in memory: a
# lookahead of 20 instead of medium's 40 or slow's 50 bounds a segment's memory at a negligible
# cost in size and quality (the figures are in BENCHMARKS.md, "Memory").
_X264 = _knobs(
    "-preset veryfast -crf 26",
    "-preset medium -crf 21 -rc-lookahead 20",
    "-preset slow -crf 18 -rc-lookahead 20",
)
_X265 = _knobs(
    "-preset veryfast -crf 28 -x265-params log-level=error",
    "-preset medium -crf 24 -x265-params log-level=error",
    "-preset slow -crf 21 -x265-params log-level=error",
)
_SVTAV1 = _knobs("-preset 10 -crf 40", "-preset 8 -crf 33", "-preset 5 -crf 27")
# NVENC: constant-quality VBR (cq), b:v 0 lets cq alone decide the rate.
_NVENC = _knobs(
    "-preset p2 -rc vbr -cq 28 -b:v 0",
    "-preset p5 -tune hq -rc vbr -cq 23 -b:v 0",
    "-preset p7 -tune hq -rc vbr -cq 19 -b:v 0 -multipass fullres",
)
_NVENC_AV1 = _knobs(
    "-preset p2 -rc vbr -cq 36 -b:v 0",
    "-preset p5 -tune hq -rc vbr -cq 30 -b:v 0",
    "-preset p7 -tune hq -rc vbr -cq 25 -b:v 0",
)
# QSV: ICQ through global_quality.
_QSV = _knobs(
    "-preset veryfast -global_quality 28",
    "-preset medium -global_quality 23",
    "-preset slower -global_quality 19",
)
_VAAPI = _knobs("-rc_mode CQP -qp 28", "-rc_mode CQP -qp 23", "-rc_mode CQP -qp 19")
_AMF = _knobs(
    "-quality speed -rc cqp -qp_i 28 -qp_p 30 -qp_b 32",
    "-quality balanced -rc cqp -qp_i 22 -qp_p 24 -qp_b 26",
    "-quality quality -rc cqp -qp_i 19 -qp_p 21 -qp_b 23",
)
# VideoToolbox: -q:v is constant quality (1..100, higher is better) on Apple silicon.
_VT = _knobs("-q:v 45 -realtime 1", "-q:v 60", "-q:v 72")


def _row(name: str, codec: str, family: str, rank: int, knobs: dict) -> Encoder:
    return Encoder(name=name, codec=codec, hardware=family != "software", family=family,
                   rank=rank, knobs=knobs)  # fmt: skip


# Hardware first (ranks 10-60), software last (100): a GPU is faster and frees the owner's CPU.
ENCODERS: dict[str, Encoder] = {
    e.name: e
    for e in (
        _row("h264_nvenc", "h264", "nvenc", 10, _NVENC),
        _row("hevc_nvenc", "hevc", "nvenc", 10, _NVENC),
        _row("av1_nvenc", "av1", "nvenc", 10, _NVENC_AV1),
        _row("h264_qsv", "h264", "qsv", 20, _QSV),
        _row("hevc_qsv", "hevc", "qsv", 20, _QSV),
        _row("h264_amf", "h264", "amf", 30, _AMF),
        _row("hevc_amf", "hevc", "amf", 30, _AMF),
        _row("h264_videotoolbox", "h264", "videotoolbox", 40, _VT),
        _row("hevc_videotoolbox", "hevc", "videotoolbox", 40, _VT),
        _row("h264_vaapi", "h264", "vaapi", 50, _VAAPI),
        _row("hevc_vaapi", "hevc", "vaapi", 50, _VAAPI),
        _row("libx264", "h264", "software", 100, _X264),
        _row("libx265", "hevc", "software", 100, _X265),
        _row("libsvtav1", "av1", "software", 100, _SVTAV1),
    )
}


def encoders_for(codec: str, *, hardware: bool | None = None) -> list[Encoder]:
    """Encoders of ``codec``, preferred first; ``hardware`` True/False keeps only that kind."""
    found = [
        e
        for e in ENCODERS.values()
        if e.codec == codec and (hardware is None or e.hardware == hardware)
    ]
    return sorted(found, key=lambda e: (e.rank, e.name))


def software_encoder(codec: str) -> Encoder:
    """The CPU encoder of ``codec`` (libx264, libx265, libsvtav1): works on every machine."""
    found = encoders_for(codec, hardware=False)
    if not found:
        raise ValueError(f"no software encoder for codec {codec!r}")
    return found[0]


def choose_encoders(codec: str, policy: str, verified: list[str] | set[str]) -> list[Encoder]:
    """The encoders to try for ``codec`` under a job's ``policy`` (gpu, cpu, any), best first:
    verified hardware (unless ``cpu``), then the software encoder (unless ``gpu``). The farmhand
    renders with the first that works; the board splits a job only among farmhands whose first
    is the same."""
    chosen: list[Encoder] = []
    if policy in ("gpu", "any"):
        hardware = [
            ENCODERS[n]
            for n in verified
            if n in ENCODERS and ENCODERS[n].hardware and ENCODERS[n].codec == codec
        ]
        chosen += sorted(hardware, key=lambda e: e.rank)
    if policy in ("cpu", "any"):
        software = software_encoder(codec)
        if software.name in verified:
            chosen.append(software)
    return chosen


def get_encoder(name: str) -> Encoder:
    """The table row of encoder ``name``; ValueError naming the known ones otherwise."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise ValueError(
            f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}"
        ) from None


def test_encode_command(
    encoder: Encoder, ffmpeg: str = "ffmpeg", size: int = 256, frames: int = 10
) -> list[str]:
    """A complete ffmpeg argv for a real tiny encode to the null muxer.

    Exit status 0 means the encoder works on this machine (ffmpeg lists hardware encoders it
    cannot open, so listing proves nothing). Run it with a timeout.
    """
    chain = "format=yuv420p"
    if encoder.upload_filter():
        chain += "," + encoder.upload_filter()
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
        *encoder.global_args(),
        "-f", "lavfi", "-i", f"testsrc2=size={size}x{size}:rate=30",
        "-frames:v", str(frames), "-vf", chain,
        *encoder.output_args("draft", 30),
        "-f", "null", "-",
    ]  # fmt: skip


test_encode_command.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test
