"""A long timeline of 1080p inputs renders in bounded memory: segments keep only a few inputs
open at a time, so ffmpeg's peak does not grow with the number of clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import make_audio, make_clip, make_image
from tests.timeline.samples import PeakMemory
from timeline.plan import render_plan
from timeline.render import probe_sources, render
from timeline.spec import parse_compilation

pytestmark = pytest.mark.slow

CLIPS = 60
LIMIT_BYTES = 1_000_000_000  # "under 1 GB", decimal


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
    with PeakMemory() as rss:
        result = render(compilation, sources, tmp_path / "long.mp4")
    assert len(plan.items) == CLIPS
    assert abs(result.duration_s - plan.planned_s) <= 1 / 30 + 0.03
    assert rss.most_processes >= 2  # it did run segments side by side
    assert 0 < rss.peak_children < LIMIT_BYTES, f"ffmpeg peaked at {rss.peak_children / 1e6:.0f} MB"
