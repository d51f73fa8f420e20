"""A long timeline of 1080p inputs renders in bounded memory: segments keep only a few inputs
open at a time, so ffmpeg's peak does not grow with the number of clips."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest

from tests.media import make_audio, make_clip, make_image
from timeline.plan import render_plan
from timeline.render import probe_sources, render
from timeline.spec import parse_compilation

pytestmark = pytest.mark.slow

CLIPS = 60
LIMIT_BYTES = 1_000_000_000  # "under 1 GB", decimal


class PeakRss:
    """The largest sum of resident memory of this process's descendants (ffmpeg), sampled
    every 20 ms, and the most of them alive at once."""

    def __init__(self) -> None:
        self.peak = 0
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = count = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                    count += 1
                except psutil.Error:
                    pass
            self.peak, self.most = max(self.peak, total), max(self.most, count)
            self._stop.wait(0.02)


@pytest.fixture(scope="module")
def hd_dir(tmp_path_factory) -> Path:
    """Six different 1080p30 clips (short: memory depends on frame size, not length)."""
    root = tmp_path_factory.mktemp("hd-media")
    patterns = ("testsrc2", "smptehdbars", "rgbtestsrc", "testsrc", "yuvtestsrc", "smptebars")
    for k, pattern in enumerate(patterns):
        make_clip(root / f"hd{k}.mp4", width=1920, height=1080, duration=0.6, pattern=pattern,
                  tone_hz=300 + 100 * k)  # fmt: skip
    make_image(root / "logo.png")
    make_audio(root / "music.m4a")
    return root


def test_sixty_1080p_clips_render_with_ffmpeg_under_1_gb(hd_dir, tmp_path):
    compilation = parse_compilation({
        "output": {"width": 1920, "height": 1080, "fps": 30, "quality": "standard"},
        "clips": [{"path": f"hd{k % 6}.mp4", "creator": f"@c{k}"} for k in range(CLIPS)],
        "transitions": {"effect": "fade", "duration": 0.2},
        "fit": "blur",
        "watermark": {"path": "logo.png"},
        "music": {"path": "music.m4a"},
    })  # fmt: skip
    sources = {s.key: hd_dir / s.path for s in compilation.sources()}
    plan = render_plan(compilation, probe_sources(compilation, sources))
    with PeakRss() as rss:
        result = render(compilation, sources, tmp_path / "long.mp4")
    assert len(plan.items) == CLIPS
    assert abs(result.duration_s - plan.planned_s) <= 1 / 30 + 0.03
    assert rss.most >= 2  # it did run segments side by side
    print(f"60 clips of 1080p: ffmpeg peaked at {rss.peak / 1e6:.0f} MB, {rss.most} processes")
    assert 0 < rss.peak < LIMIT_BYTES, f"ffmpeg peaked at {rss.peak / 1e6:.0f} MB"
