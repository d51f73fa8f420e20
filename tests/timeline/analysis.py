"""Looking inside rendered files: pixels of one frame, loudness of one tone over a time range."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

from timeline.ffmpeg import ffmpeg_binary, ffprobe_binary


def frame_rgb(path: Path, at_s: float) -> tuple[int, int, bytes]:
    """(width, height, RGB24 bytes) of the frame shown at ``at_s`` seconds."""
    size = subprocess.run(
        [ffprobe_binary(), "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=width,height", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip().split(",")  # fmt: skip
    width, height = int(size[0]), int(size[1])
    raw = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-ss", f"{at_s:.3f}", "-i", str(path), "-frames:v", "1",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert len(raw) == width * height * 3, f"got {len(raw)} bytes of a {width}x{height} frame"
    return width, height, raw


def pixel(frame: tuple[int, int, bytes], x: int, y: int) -> tuple[int, int, int]:
    width, _, raw = frame
    i = (y * width + x) * 3
    return raw[i], raw[i + 1], raw[i + 2]


def is_black(rgb: tuple[int, int, int], tolerance: int = 24) -> bool:
    return max(rgb) <= tolerance


def row_content_width(frame: tuple[int, int, bytes], y: int) -> int:
    """How many pixels of row ``y`` are not black (the picture between letterbox bars)."""
    width = frame[0]
    return sum(not is_black(pixel(frame, x, y)) for x in range(width))


def mono_pcm(path: Path, start_s: float, duration_s: float, rate: int = 8000) -> list[float]:
    """The sound of ``path`` from ``start_s`` for ``duration_s``, mono, as floats in -1..1."""
    raw = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-ss", f"{start_s:.3f}", "-t", f"{duration_s:.3f}",
         "-i", str(path), "-vn", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    count = len(raw) // 2
    values = memoryview(raw)[: count * 2].cast("h")
    return [v / 32768 for v in values]


def tone_level(samples: list[float], freq: float, rate: int = 8000) -> float:
    """Amplitude of the ``freq`` Hz component of ``samples`` (Goertzel), ~0.125 for a full-level
    lavfi sine, ~0 when absent."""
    if not samples:
        return 0.0
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / len(samples)


def rms(samples: list[float]) -> float:
    return math.sqrt(sum(x * x for x in samples) / len(samples)) if samples else 0.0
