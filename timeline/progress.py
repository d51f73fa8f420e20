"""Progress: ffmpeg's ``-progress pipe:1`` blocks in, one ``Progress`` for the whole render out.

A render runs several ffmpeg processes (video segments, the audio track, the final mux), some at
the same time. Each reports ``out_time_us`` of its own output; ``ProgressTracker`` weighs them by
the seconds of output each one makes and calls the caller back with one overall fraction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Progress:
    """How far a render is. ``fraction`` 0..1 never goes backwards; ``fps`` is output frames per
    second summed over the running encodes, ``speed`` output seconds per wall second, ``eta_s``
    the estimated seconds left; ``out_time_s`` the seconds of video encoded so far."""

    fraction: float
    fps: float | None
    speed: float | None
    eta_s: float | None
    out_time_s: float


@dataclass
class FfmpegReport:
    """One block of ``-progress`` output from one ffmpeg."""

    out_time_s: float
    frame: int | None
    fps: float | None
    speed: float | None
    done: bool  # ``progress=end``: ffmpeg finished writing


class ProgressReader:
    """Turns ``-progress`` lines (``key=value``) into one ``FfmpegReport`` per block."""

    def __init__(self) -> None:
        self._block: dict[str, str] = {}

    def feed(self, line: str) -> FfmpegReport | None:
        """Take one line; returns a report when the line closes a block (``progress=...``)."""
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        if key != "progress":
            self._block[key] = value.strip()
            return None
        block, self._block = self._block, {}
        out_us = _float(block.get("out_time_us")) or _float(block.get("out_time_ms"))
        speed = block.get("speed", "").rstrip("x")
        frame = _float(block.get("frame"))
        return FfmpegReport(
            out_time_s=max(0.0, (out_us or 0.0) / 1_000_000),
            frame=int(frame) if frame is not None else None,
            fps=_float(block.get("fps")),
            speed=_float(speed),
            done=value.strip() == "end",
        )


class ProgressTracker:
    """Combines the reports of several concurrent ffmpeg jobs into one ``Progress``.

    Each job is registered with its weight: the seconds of output it makes (video segments), or
    a share of the total for cheap passes (audio, mux). Thread-safe; calls ``callback`` at most
    every ``min_interval_s`` (and always on completion), never with a smaller fraction than before.
    """

    def __init__(
        self,
        callback: Callable[[Progress], None] | None,
        *,
        min_interval_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._callback = callback
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._weights: dict[str, float] = {}
        self._lengths: dict[str, float] = {}
        self._video: dict[str, bool] = {}
        self._done: dict[str, float] = {}
        self._rates: dict[str, tuple[float | None, float | None]] = {}
        self._started = clock()
        self._last_sent = -1.0
        self._last_fraction = 0.0

    def add_job(
        self, job: str, weight_s: float, *, length_s: float | None = None, video: bool
    ) -> None:
        """Register a job worth ``weight_s`` seconds of the render that writes ``length_s``
        seconds of output (default: ``weight_s``). ``video`` jobs count towards out_time_s."""
        with self._lock:
            self._weights[job] = max(weight_s, 1e-6)
            self._lengths[job] = max(length_s if length_s is not None else weight_s, 1e-6)
            self._video[job] = video
            self._done[job] = 0.0

    def report(self, job: str, report: FfmpegReport) -> None:
        """Record a report of ``job`` and maybe call back."""
        with self._lock:
            weight = self._weights.get(job)
            if weight is None:
                return
            share = 1.0 if report.done else min(report.out_time_s / self._lengths[job], 1.0)
            self._done[job] = weight * share
            self._rates[job] = (None, None) if report.done else (report.fps, report.speed)
            progress = self._snapshot(force=False)
        if progress is not None and self._callback is not None:
            self._callback(progress)

    def finish(self, job: str) -> None:
        """Mark ``job`` complete."""
        with self._lock:
            if job in self._weights:
                self._done[job] = self._weights[job]
                self._rates.pop(job, None)
            progress = self._snapshot(force=True)
        if progress is not None and self._callback is not None:
            self._callback(progress)

    def _snapshot(self, *, force: bool) -> Progress | None:
        now = self._clock()
        if not force and now - self._last_sent < self._min_interval_s:
            return None
        total = sum(self._weights.values())
        fraction = sum(self._done.values()) / total if total else 0.0
        fraction = max(self._last_fraction, min(1.0, fraction))
        self._last_fraction = fraction
        self._last_sent = now
        fps_values = [f for f, _ in self._rates.values() if f]
        speed_values = [s for _, s in self._rates.values() if s]
        elapsed = now - self._started
        eta = elapsed * (1 - fraction) / fraction if fraction >= 0.01 and elapsed > 0 else None
        return Progress(
            fraction=fraction,
            fps=sum(fps_values) if fps_values else None,
            speed=sum(speed_values) if speed_values else None,
            eta_s=eta,
            out_time_s=sum(
                done / self._weights[job] * self._lengths[job]
                for job, done in self._done.items()
                if self._video[job]
            ),
        )


def _float(value: str | None) -> float | None:
    if value is None or value in ("", "N/A"):
        return None
    try:
        return float(value)
    except ValueError:
        return None
