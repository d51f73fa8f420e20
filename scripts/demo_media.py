"""Sample media for the demo, generated with ffmpeg's lavfi sources: title cards, clips of
different sizes and frame rates (one portrait, one without sound), a stinger, a watermark and a
music track. Small and short, so the demo renders in seconds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

FFMPEG = os.environ.get("FFMPEG_BINARY", "ffmpeg")
FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
    "/System/Library/Fonts/Supplemental/Arial Bold.ttf",
    "C:/Windows/Fonts/arialbd.ttf",
)


def _font() -> str | None:
    return next((f for f in FONTS if os.path.isfile(f)), None)


def _text(text: str, size: int, y: str) -> str:
    """A centred drawtext filter, or nothing when no font file is around (plain card then)."""
    font = _font()
    if font is None:
        return ""
    return (
        f",drawtext=fontfile='{font}':text='{text}':fontcolor=white:fontsize={size}"
        f":x=(w-text_w)/2:y={y}:expansion=none"
    )


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _video(path: Path, picture: str, seconds: float, tone_hz: int | None) -> Path:
    args = ["-f", "lavfi", "-i", picture]
    if tone_hz:
        args += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate=44100:duration={seconds}",
        ]
    args += ["-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    if tone_hz:
        args += ["-c:a", "aac", "-b:a", "96k", "-shortest"]
    _ffmpeg(*args, str(path))
    return path


def make_sample_media(folder: Path) -> dict[str, Path]:
    """Write the demo's media into ``folder``; returns name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "intro": _video(
            folder / "intro.mp4",
            "color=c=0x1d3557:size=640x360:rate=30:duration=2"
            + _text("clipfarm demo", 48, "(h-text_h)/2"),
            2,
            523,
        ),
        "outro": _video(
            folder / "outro.mp4",
            "color=c=0x457b9d:size=640x360:rate=30:duration=2"
            + _text("thanks for watching", 40, "(h-text_h)/2"),
            2,
            392,
        ),
        "landscape": _video(
            folder / "clip-720p.mp4", "testsrc2=size=1280x720:rate=30:duration=3", 3, 440
        ),
        "bars": _video(
            folder / "clip-bars-25fps.mp4", "smptebars=size=640x360:rate=25:duration=3", 3, 660
        ),
        "portrait": _video(
            folder / "clip-portrait.mp4", "testsrc=size=360x640:rate=30:duration=3", 3, 330
        ),
        "silent": _video(
            folder / "clip-no-audio.mp4", "rgbtestsrc=size=480x270:rate=24:duration=2.5", 2.5, None
        ),
        "stinger": _video(
            folder / "stinger.mp4",
            "color=c=0xe63946:size=640x360:rate=30:duration=0.6" + _text("*", 120, "(h-text_h)/2"),
            0.6,
            880,
        ),
    }
    logo = folder / "logo.png"
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=0xf1faee:size=128x128" + _text("CF", 64, "(h-text_h)/2"),
        "-frames:v", "1", str(logo),
    )  # fmt: skip
    made["logo"] = logo
    music = folder / "music.m4a"
    chord = "0.15*sin(2*PI*220*t)+0.1*sin(2*PI*277*t)+0.1*sin(2*PI*330*t)"
    _ffmpeg(
        "-f", "lavfi", "-i", f"aevalsrc={chord}|{chord}:s=48000:d=12",
        "-c:a", "aac", "-b:a", "96k", str(music),
    )  # fmt: skip
    made["music"] = music
    return made
