"""The mixed input set for timeline tests: every odd format a real compilation meets, tiny."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import make_audio, make_clip, make_image
from tests.timeline.samples import make_interlaced, set_rotation


@pytest.fixture(scope="session")
def mixed_dir(tmp_path_factory) -> Path:
    """Tiny media of many shapes, generated once per session."""
    root = tmp_path_factory.mktemp("mixed")
    make_clip(root / "hd1080p30.mp4", width=1920, height=1080, fps=30, duration=1.0, tone_hz=300)
    make_clip(root / "hd720p60.mp4", width=1280, height=720, fps=60, duration=1.0, tone_hz=500)
    make_clip(root / "portrait.mp4", width=360, height=640, fps=30, duration=1.2,
              pattern="smptebars", tone_hz=700)  # fmt: skip
    make_clip(root / "sar43.mp4", width=240, height=180, sar="4/3", fps=25, duration=1.0,
              audio="mono", sample_rate=22_050, tone_hz=350)  # fmt: skip
    set_rotation(make_clip(root / "phone.mp4", width=320, height=180, fps=30, duration=1.0), 90)
    make_clip(root / "silent.mp4", duration=1.0, audio=None, fps=24)
    make_clip(root / "surround.mp4", duration=1.0, audio="5.1", tone_hz=550)
    make_clip(root / "short.mp4", duration=0.4, pattern="rgbtestsrc", tone_hz=800)
    make_clip(root / "tenbit.mp4", duration=1.0, pix_fmt="yuv420p10le", tone_hz=450)
    make_interlaced(root / "interlaced.mp4")
    make_clip(root / "intro.mp4", duration=1.0, pattern="rgbtestsrc", tone_hz=250)
    make_clip(root / "outro.mp4", duration=1.0, pattern="rgbtestsrc", tone_hz=260)
    make_clip(root / "stinger.mp4", duration=0.5, pattern="smptehdbars", tone_hz=900)
    make_image(root / "logo.png", width=64, height=32, color="red")
    make_audio(root / "music.m4a", duration=2.0, tone_hz=220)
    (root / "corrupt.mp4").write_bytes((root / "hd720p60.mp4").read_bytes()[:3000])
    (root / "notes.txt").write_text("not media\n")
    return root
