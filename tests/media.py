"""Tiny real media for tests, generated with ffmpeg's lavfi sources (no fixtures on disk)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

FFMPEG = os.environ.get("FFMPEG_BINARY", "ffmpeg")


def make_clip(
    path: Path,
    *,
    width: int = 320,
    height: int = 180,
    fps: float = 30,
    duration: float = 2.0,
    audio: str | None = "stereo",  # "stereo", "mono", "5.1" or None for no audio
    sample_rate: int = 48_000,
    tone_hz: int = 440,
    pattern: str = "testsrc2",
    sar: str | None = None,
    rotate: int | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write a short clip: a moving test pattern plus a sine tone. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"{pattern}=size={width}x{height}:rate={fps}:duration={duration}",
    ]
    if audio:
        layout = {"stereo": "stereo", "mono": "mono", "5.1": "5.1"}[audio]
        cmd += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate={sample_rate}:duration={duration},"
            f"aformat=channel_layouts={layout}",
        ]
    vf = []
    if sar:
        vf.append(f"setsar={sar}")
    if vf:
        cmd += ["-vf", ",".join(vf)]
    cmd += ["-c:v", codec, "-pix_fmt", pix_fmt]
    if codec == "libx264":
        cmd += ["-preset", "ultrafast", "-g", str(int(fps))]
    if audio:
        cmd += [
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-ac",
            {"stereo": "2", "mono": "1", "5.1": "6"}[audio],
        ]
    if rotate is not None:
        cmd += ["-metadata:s:v:0", f"rotate={rotate}"]
    cmd += ["-shortest", str(path)]
    subprocess.run(cmd, check=True)
    return path


def make_image(path: Path, *, width: int = 64, height: int = 64, color: str = "red") -> Path:
    """Write a solid-colour PNG (for watermarks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=c={color}:size={width}x{height}",
            "-frames:v",
            "1",
            str(path),
        ],
        check=True,
    )
    return path


def make_audio(path: Path, *, duration: float = 3.0, tone_hz: int = 220) -> Path:
    """Write a short AAC music track (m4a)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate=44100:duration={duration}",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            str(path),
        ],
        check=True,
    )
    return path
