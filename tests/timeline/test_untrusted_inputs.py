"""Media from strangers: ffmpeg and ffprobe open it as media and nothing else, within caps.

A submitter's upload or clip URL is a file on the farmhand's disk by the time ffmpeg sees it.
ffmpeg picks a demuxer by content, so a "video" that is really an HLS playlist or a concat list
would make it read whatever file the list names: the PC's own disk, rendered into the video.
Pictures and videos that declare enormous sizes must be refused before a decoder allocates them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media import (
    FFMPEG,
    make_clip,
    make_local_file_playlist,
    make_png_declaring,
    make_solid_clip,
)
from timeline.errors import InputError
from timeline.probe import MAX_DURATION_S, MAX_PIXELS, MAX_STREAMS, ProbeError, probe
from timeline.render import render
from timeline.spec import parse_compilation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """A video that stands for a private file on the farmhand's disk: solid magenta, MPEG-TS
    (what an HLS segment usually is, so ffmpeg would happily play it)."""
    return make_solid_clip(tmp_path_factory.mktemp("private") / "holiday.ts", color="magenta")


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    return make_png_declaring(tmp_path_factory.mktemp("huge") / "poster.png", 16000, 16000)


def compile_clips(*paths: str):
    output = {"width": 320, "height": 180, "fps": 30, "quality": "draft"}
    return parse_compilation({"output": output, "clips": [{"path": p} for p in paths]})


def test_uploaded_playlist_reading_a_local_file_is_refused_by_the_probe(secret, tmp_path):
    upload = make_local_file_playlist(tmp_path / "upload.mp4", secret)
    with pytest.raises(ProbeError) as refused:
        probe(upload, label="clip 2 (media m1)")
    assert isinstance(refused.value, InputError)  # permanent: the input's fault
    message = str(refused.value)
    assert message.startswith("clip 2 (media m1): ") and "playlist" in message
    assert str(secret) not in message  # the probe says nothing about the file it names


@pytest.mark.parametrize("name", ["logo.png", "song.m4a", "clip.ts"])
def test_a_playlist_is_refused_whatever_it_is_called(secret, tmp_path, name):
    with pytest.raises(ProbeError, match="playlist"):
        probe(make_local_file_playlist(tmp_path / name, secret))


def test_a_concat_list_naming_a_local_file_is_refused(secret, tmp_path):
    listing = tmp_path / "clip.mp4"
    listing.write_text(f"ffconcat version 1.0\nfile '{secret}'\n")
    with pytest.raises(ProbeError, match="playlist"):
        probe(listing)


def test_render_refuses_a_playlist_clip_and_shows_no_frame_of_the_local_file(secret, tmp_path):
    make_clip(tmp_path / "a.mp4", duration=1.0)
    make_local_file_playlist(tmp_path / "upload.mp4", secret)
    compilation = compile_clips("a.mp4", "upload.mp4")
    sources = {s.key: tmp_path / s.path for s in compilation.sources()}
    out = tmp_path / "out" / "video.mp4"

    with pytest.raises(InputError) as refused:
        render(compilation, sources, out)

    assert "clip 2" in str(refused.value) and "playlist" in str(refused.value)
    assert refused.value.source_key == "path:upload.mp4"
    assert not out.exists() and list(out.parent.iterdir()) == []  # no frame of it anywhere


def test_picture_over_the_pixel_cap_is_refused_before_it_is_decoded(huge_png):
    assert 16000 * 16000 > MAX_PIXELS
    # ffprobe runs in a fresh interpreter, so its peak memory is the only child's there.
    script = (
        "import json, resource, sys\n"
        "from timeline.probe import ProbeError, probe\n"
        "try:\n"
        "    probe(sys.argv[1], label='watermark')\n"
        "    error = None\n"
        "except ProbeError as exc:\n"
        "    error = str(exc)\n"
        "peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'error': error, 'peak_mb': peak_kb / 1024}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(huge_png)], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(done.stdout)
    assert result["error"] is not None, "a 16000x16000 picture was accepted"
    assert result["error"].startswith("watermark: ") and "16000x16000" in result["error"]
    assert "8192x8192" in result["error"]  # says what the cap is
    assert result["peak_mb"] < 200  # a decoded 16000x16000 RGB picture alone is 768 MB


def test_file_with_more_streams_than_the_cap_is_refused(tmp_path):
    many = tmp_path / "many.mkv"
    maps = [arg for _ in range(MAX_STREAMS + 1) for arg in ("-map", "0:a")]
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:d=0.1",
                    *maps, "-c:a", "pcm_u8", str(many)], check=True)  # fmt: skip
    with pytest.raises(ProbeError, match=f"more than {MAX_STREAMS} streams"):
        probe(many, label="clip 1")


def test_file_longer_than_the_cap_is_refused(tmp_path):
    long = tmp_path / "long.mkv"
    hours = MAX_DURATION_S / 3600 + 1
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi",
                    "-i", f"color=c=black:s=16x16:r=1/3600:d={hours * 3600:.0f}",
                    "-c:v", "libx264", "-preset", "ultrafast", str(long)], check=True)  # fmt: skip
    with pytest.raises(ProbeError, match="longer than") as refused:
        probe(long, label="clip 1")
    assert f"{MAX_DURATION_S / 3600:g} hours" in str(refused.value)


def test_real_media_of_every_kind_still_opens(media_dir):
    assert probe(media_dir / "a.mp4").has_video
    assert probe(media_dir / "logo.png").image
    assert probe(media_dir / "music.m4a").has_audio
