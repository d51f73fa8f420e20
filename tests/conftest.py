"""Session-wide fixtures: tiny media generated once, shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import make_audio, make_clip, make_image


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """A folder of tiny real media, generated once per session."""
    root = tmp_path_factory.mktemp("media")
    make_clip(root / "a.mp4", duration=2.0, tone_hz=440)
    make_clip(root / "b.mp4", duration=2.0, tone_hz=660, pattern="smptebars")
    make_clip(root / "intro.mp4", duration=1.0, pattern="rgbtestsrc")
    make_clip(root / "outro.mp4", duration=1.0, pattern="rgbtestsrc")
    make_clip(root / "silent.mp4", duration=1.5, audio=None)
    make_image(root / "logo.png")
    make_audio(root / "music.m4a")
    (root / "not-media.txt").write_text("this is not a video\n")
    return root
