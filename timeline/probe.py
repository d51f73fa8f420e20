"""What a media file holds, read with ffprobe.

``probe`` accepts anything ffprobe can read: videos, audio-only files (music) and still images
(watermarks), and reports what it found. Whether a file *suits its role* (a clip needs video) is
the plan's decision, not the probe's. A file ffprobe cannot read at all, or one with neither audio
nor video, raises ``ProbeError``: a permanent ``InputError`` naming the file.

Media comes from strangers, so the probe is also where a file is refused before anything decodes
it: ffprobe opens it like every render input (``timeline.inputs``: real media containers only,
never a playlist that names other files, ``RefusedFormat``), and a file over the caps below
(``MAX_PIXELS``, ``MAX_STREAMS``, ``MAX_DURATION_S``) raises ``InputTooLarge``. ffprobe itself
is bound by the same caps: it never allocates a picture over ``MAX_PIXELS`` to find out.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from timeline.errors import InputError
from timeline.ffmpeg import ffprobe_binary
from timeline.inputs import media_input, refusal

PROBE_TIMEOUT_S = 60.0

# What any input may be: one place, applied by ``probe`` (board uploads, farmhand sources) and by
# every ffmpeg reading media (``timeline.segments``). A picture of 8192x8192 (67 megapixels:
# phone and camera photos, 8K video) decodes to about 200 MB; 16000x16000 PNG would take 768 MB
# from a 0.7 MB file. Streams: files with dozens of subtitle, attachment (font) or language
# tracks are normal, thousands are an attack on the decoders opened for each. Duration: long
# VODs are trimmed by clips, but an input whose *untrimmed* length would keep a PC rendering
# for days (a 1 KB file can declare that) is refused.
MAX_PIXELS = 8192 * 8192
MAX_STREAMS = 64
MAX_DURATION_S = 12 * 3600.0

# Containers ffmpeg reads single pictures with (png_pipe, jpeg_pipe, webp_pipe...).
_IMAGE_FORMATS = re.compile(r"^(image2|\w+_pipe)$")


class ProbeError(InputError):
    """ffprobe could not read the file, or it holds neither video nor audio."""


class RefusedFormat(ProbeError):
    """The file is not media: a playlist, manifest or list of other files (HLS, DASH, concat…)
    or a format renders do not open. Refused before ffmpeg follows anything it names."""


class InputTooLarge(ProbeError):
    """The file is over a cap (``MAX_PIXELS``, ``MAX_STREAMS``, ``MAX_DURATION_S``); refused
    before any decoder allocates it."""


_OVER_PIXELS = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")
_OVER_STREAMS = re.compile(r"Number of streams exceeds max_streams")


@dataclass(frozen=True)
class MediaInfo:
    """One probed file. Sizes are as displayed: rotation applied (a phone clip stored 1920x1080
    with a 90° display matrix reports 1080x1920) and ``sar`` turned with it."""

    path: Path
    duration_s: float | None  # container duration; None for still images and unknown lengths
    has_video: bool
    width: int
    height: int
    sar: float  # sample (pixel) aspect ratio, 1.0 for square pixels
    fps: float
    rotation: int  # clockwise degrees the picture is turned for display: 0, 90, 180 or 270
    pix_fmt: str
    bit_depth: int
    has_audio: bool
    audio_rate: int
    audio_channels: int
    audio_layout: str
    image: bool  # a still picture (PNG, JPEG...), not a video
    format_name: str
    size_bytes: int
    video_codec: str = ""
    audio_codec: str = ""
    video_duration_s: float | None = None  # the video stream's own length, when known
    audio_duration_s: float | None = None  # the audio stream's own length, when known
    video_frames: int | None = None  # frames in the video stream, when the container says
    streams: int = 0  # every stream of the file (attachments and subtitles too)
    color_space: str = ""  # the YCbCr matrix the file declares (bt709, smpte170m...), "" if none
    interlaced: bool = False  # stored as fields: needs deinterlacing

    @property
    def display_aspect(self) -> float:
        """Width over height as the picture is meant to be seen (rotation and SAR applied)."""
        if not self.has_video or self.height <= 0:
            return 0.0
        return self.width * self.sar / self.height

    @property
    def video_length_s(self) -> float | None:
        """The best known length of the picture: the video stream's, else the container's."""
        return self.video_duration_s if self.video_duration_s else self.duration_s


def probe(path: Path, *, label: str | None = None, limits: bool = True) -> MediaInfo:
    """Read ``path`` with ffprobe. ``label`` names the file in error messages (e.g. ``clip 3
    (https://…/a.mp4)``); it defaults to the file name. Raises ``ProbeError`` for files that are
    missing, unreadable or hold no audio or video stream, ``RefusedFormat`` for playlists and
    other files that are not media, ``InputTooLarge`` for files over the caps. ``limits=False``
    skips the duration cap (for the renderer's own output); the others always hold."""
    path = Path(path)
    name = label or path.name
    if not path.is_file():
        raise ProbeError(f"{name}: file not found", label=label)
    cmd = [
        ffprobe_binary(), "-v", "error", "-print_format", "json",
        "-show_format", "-show_streams",
        *media_input(path, max_pixels=MAX_PIXELS, max_streams=MAX_STREAMS),
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{name}: ffprobe took over {PROBE_TIMEOUT_S:.0f} s to read it; "
                         "the file is probably damaged", label=label) from None  # fmt: skip
    except FileNotFoundError:
        raise ProbeError(f"{name}: cannot run ffprobe ({cmd[0]}); is ffmpeg installed?",
                         label=label) from None  # fmt: skip
    stderr = done.stderr.decode("utf-8", "replace").strip()
    _refuse_unsafe(stderr, name, label)
    if done.returncode != 0:
        reason = _last_line(stderr).removeprefix(f"file:{path}: ").removeprefix(f"{path}: ")
        raise ProbeError(f"{name}: not a readable media file "
                         f"({reason or f'ffprobe exited {done.returncode}'})", label=label,
                         stderr_tail=stderr[-4000:])  # fmt: skip
    try:
        data = json.loads(done.stdout or b"{}")
    except json.JSONDecodeError:
        raise ProbeError(f"{name}: ffprobe gave an unreadable answer", label=label) from None
    info = _media_info(path, data, name, label)
    if limits:
        check_limits(info, label=label)
    return info


def check_limits(info: MediaInfo, *, label: str | None = None) -> None:
    """Raise ``InputTooLarge`` naming the file (``label``, default its name) when ``info`` is
    over ``MAX_PIXELS``, ``MAX_STREAMS`` or ``MAX_DURATION_S``. ``probe`` calls it; callers
    holding a ``MediaInfo`` from elsewhere can too."""
    name = label or info.path.name
    if info.width * info.height > MAX_PIXELS:
        raise InputTooLarge(f"{name}: its picture is {info.width}x{info.height}, "
                            f"over the limit of {_pixels_limit()}", label=label)  # fmt: skip
    if info.streams > MAX_STREAMS:
        raise InputTooLarge(f"{name}: it has {info.streams} streams; files with more than "
                            f"{MAX_STREAMS} streams are not accepted", label=label)  # fmt: skip
    longest = max(info.duration_s or 0.0, info.video_duration_s or 0.0,
                  info.audio_duration_s or 0.0)  # fmt: skip
    if longest > MAX_DURATION_S:
        raise InputTooLarge(f"{name}: it lasts {longest / 3600:.1f} hours, longer than the limit "
                            f"of {MAX_DURATION_S / 3600:g} hours", label=label)  # fmt: skip


def _refuse_unsafe(stderr: str, name: str, label: str | None) -> None:
    """The refusals of the allow-lists and caps, which ffprobe reports only on stderr (a picture
    over ``MAX_PIXELS`` is even reported with exit status 0 and a size of 0x0)."""
    why = refusal(stderr)
    if why is not None:
        raise RefusedFormat(f"{name}: {why}", label=label, stderr_tail=stderr[-4000:])
    found = _OVER_PIXELS.search(stderr)
    if found is not None:
        raise InputTooLarge(f"{name}: its picture is {found.group(1)}x{found.group(2)}, over the "
                            f"limit of {_pixels_limit()}", label=label)  # fmt: skip
    if _OVER_STREAMS.search(stderr):
        raise InputTooLarge(f"{name}: it has more than {MAX_STREAMS} streams; files with that "
                            "many are not accepted", label=label)  # fmt: skip


def _pixels_limit() -> str:
    side = int(MAX_PIXELS**0.5)
    square = f"{side}x{side}" if side * side == MAX_PIXELS else f"{MAX_PIXELS} pixels"
    return f"{square} ({MAX_PIXELS / 1e6:.0f} megapixels)"


def _media_info(path: Path, data: dict, name: str, label: str | None) -> MediaInfo:
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    # cover art in music files is a "video" stream with attached_pic; it is not a picture track
    videos = [
        s for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]  # fmt: skip
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos and not audios:
        raise ProbeError(f"{name}: holds no video or audio stream", label=label)
    format_name = str(fmt.get("format_name") or "")
    duration = _number(fmt.get("duration"))
    v = videos[0] if videos else {}
    a = audios[0] if audios else {}
    image = bool(videos) and bool(_IMAGE_FORMATS.match(format_name))

    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    if videos and (width <= 0 or height <= 0):
        raise ProbeError(f"{name}: its video stream has no picture size", label=label)
    sar = _ratio(v.get("sample_aspect_ratio")) or 1.0
    rotation = _rotation(v)
    if rotation in (90, 270):
        width, height, sar = height, width, 1.0 / sar
    fps = _ratio(v.get("avg_frame_rate")) or _ratio(v.get("r_frame_rate")) or 0.0
    if fps > 1000:  # timebase-like r_frame_rate of odd files, not a real rate
        fps = _ratio(v.get("avg_frame_rate")) or 0.0
    pix_fmt = str(v.get("pix_fmt") or "")
    frames = v.get("nb_frames")
    return MediaInfo(
        path=path,
        duration_s=None if image else duration,
        has_video=bool(videos),
        width=width,
        height=height,
        sar=sar,
        fps=fps,
        rotation=rotation,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(v, pix_fmt),
        has_audio=bool(audios),
        audio_rate=int(a.get("sample_rate") or 0),
        audio_channels=int(a.get("channels") or 0),
        audio_layout=str(a.get("channel_layout") or ""),
        image=image,
        format_name=format_name,
        size_bytes=int(fmt.get("size") or path.stat().st_size),
        video_codec=str(v.get("codec_name") or ""),
        audio_codec=str(a.get("codec_name") or ""),
        video_duration_s=None if image else _number(v.get("duration")),
        audio_duration_s=_number(a.get("duration")),
        video_frames=int(frames) if str(frames or "").isdigit() else None,
        streams=len(streams),
        color_space=str(v.get("color_space") or ""),
        interlaced=str(v.get("field_order") or "") in ("tt", "bb", "tb", "bt"),
    )


def _rotation(stream: dict) -> int:
    """Clockwise display rotation. ffprobe reports the display matrix counter-clockwise."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return round(-float(side["rotation"]) / 90) * 90 % 360
    tag = (stream.get("tags") or {}).get("rotate")
    if tag is not None:
        try:
            return round(float(tag) / 90) * 90 % 360
        except ValueError:
            return 0
    return 0


def _bit_depth(stream: dict, pix_fmt: str) -> int:
    raw = str(stream.get("bits_per_raw_sample") or "")
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    found = re.search(r"p(\d{2})(le|be)?$", pix_fmt)
    return int(found.group(1)) if found else 8


def _ratio(value: object) -> float | None:
    """'30000/1001' or '4:3' as a float; None for missing, zero or nonsense values."""
    if not value:
        return None
    text = str(value).replace(":", "/")
    try:
        number = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None
    return number if number > 0 else None


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
