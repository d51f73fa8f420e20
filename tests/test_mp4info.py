"""The in-process MP4 header reader agrees with ffprobe and refuses damaged files."""

from __future__ import annotations

import json
import subprocess

import pytest

from timeline.mp4info import Mp4Error, read_mp4


def ffprobe(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize("name", ["a.mp4", "silent.mp4", "intro.mp4"])
def test_header_matches_ffprobe(media_dir, name):
    info = read_mp4(media_dir / name)
    probed = ffprobe(media_dir / name)
    video = next(s for s in probed["streams"] if s["codec_type"] == "video")
    assert abs(info.duration_s - float(probed["format"]["duration"])) < 0.05
    assert (info.width, info.height) == (video["width"], video["height"])
    assert info.has_video
    assert info.has_audio == any(s["codec_type"] == "audio" for s in probed["streams"])


def test_truncated_and_foreign_files_are_refused(media_dir, tmp_path):
    data = (media_dir / "a.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Mp4Error):
        read_mp4(cut)
    with pytest.raises(Mp4Error):
        read_mp4(media_dir / "not-media.txt")
    with pytest.raises(Mp4Error):
        read_mp4(media_dir / "logo.png")
