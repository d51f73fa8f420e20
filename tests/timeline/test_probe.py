"""Probe: what each odd input holds, and permanent errors for what cannot be read."""

from __future__ import annotations

import pytest

from timeline.errors import InputError, PermanentRenderError
from timeline.probe import ProbeError, probe


def test_video_with_audio(mixed_dir):
    info = probe(mixed_dir / "hd720p60.mp4")
    assert (info.width, info.height, info.fps) == (1280, 720, 60)
    assert info.has_video and info.has_audio and not info.image
    assert info.audio_rate == 48_000 and info.audio_channels == 2
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p" and info.bit_depth == 8


def test_rotated_phone_clip_reports_its_display_size(mixed_dir):
    info = probe(mixed_dir / "phone.mp4")
    assert info.rotation == 90
    assert (info.width, info.height) == (180, 320)  # stored 320x180, shown portrait
    assert info.display_aspect < 1


def test_anamorphic_clip_reports_its_sample_aspect(mixed_dir):
    info = probe(mixed_dir / "sar43.mp4")
    assert (info.width, info.height) == (240, 180)
    assert info.sar == pytest.approx(4 / 3)
    assert info.display_aspect == pytest.approx(16 / 9)
    assert (info.audio_rate, info.audio_layout) == (22_050, "mono")


def test_surround_ten_bit_and_silent_clips(mixed_dir):
    assert probe(mixed_dir / "surround.mp4").audio_channels == 6
    assert probe(mixed_dir / "tenbit.mp4").bit_depth == 10
    silent = probe(mixed_dir / "silent.mp4")
    assert silent.has_video and not silent.has_audio and silent.audio_rate == 0


def test_image_and_audio_only_files_are_accepted_and_reported(mixed_dir):
    logo = probe(mixed_dir / "logo.png")
    assert logo.image and logo.has_video and logo.duration_s is None
    assert (logo.width, logo.height) == (64, 32)
    music = probe(mixed_dir / "music.m4a")
    assert not music.has_video and music.has_audio
    assert music.duration_s == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("name", ["corrupt.mp4", "notes.txt", "missing.mp4"])
def test_unreadable_files_are_permanent_errors_naming_them(mixed_dir, name):
    with pytest.raises(ProbeError) as caught:
        probe(mixed_dir / name, label=f"clip 2 ({name})")
    assert isinstance(caught.value, InputError)
    assert isinstance(caught.value, PermanentRenderError)
    assert f"clip 2 ({name})" in caught.value.message
    assert caught.value.label == f"clip 2 ({name})"


def test_interlaced_and_colour_tagged_clips_are_reported(mixed_dir):
    assert probe(mixed_dir / "interlaced.mp4").interlaced
    assert not probe(mixed_dir / "surround.mp4").interlaced
