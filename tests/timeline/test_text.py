"""Overlay texts: any characters arrive as typed, sized from the output, kept in their fifth."""

from __future__ import annotations

import subprocess

import pytest

from tests.timeline.analysis import frame_rgb, pixel
from timeline.ffmpeg import ffmpeg_binary
from timeline.text import clean_text, find_font, layout_text, overlay_filters

NASTY = [
    "it's \"quoted\" 'twice'",
    "a:b::c \\ back\\slash \\\\ end\\",
    "100% %{pts} %{localtime} %%",
    "[brackets], commas; semicolons = equals",
    "line one\nline two\r\nline three",
    "emoji 🎉🔥👍🏽 and ünïcödé 日本語",
    "'",
    "\\",
    "tab\tand\x00control\x07chars",
]


def draw(tmp_path, title, creator, width=320, height=180, color="gray"):
    """Draw the overlays over a plain picture with real ffmpeg; the frame's RGB."""
    filters = overlay_filters(title, creator, width, height, find_font())
    graph = tmp_path / "graph.txt"
    graph.write_text("[0:v]" + ",".join([*filters, "format=rgb24"]) + "[v]", encoding="utf-8")
    out = tmp_path / "frame.mp4"
    done = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i",
         f"color=c={color}:size={width}x{height}:rate=10:duration=0.1",
         "-filter_complex_script", str(graph), "-map", "[v]", "-c:v", "libx264rgb",
         "-qp", "0", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return frame_rgb(out, 0)


@pytest.mark.parametrize("text", NASTY)
def test_any_text_renders(tmp_path, text):
    frame = draw(tmp_path, text, text)
    background = pixel(frame, 319, 90)
    for rows in (range(0, 36), range(144, 180)):  # title on top, creator at the bottom
        assert any(pixel(frame, x, y) != background for x in range(0, 320, 2) for y in rows)


def test_overlays_stay_in_the_top_and_bottom_fifth(tmp_path):
    frame = draw(tmp_path, "Ace of the week\nround two", "by somebody with a long name")
    background = pixel(frame, 319, 90)
    changed_rows = {
        y for y in range(180) for x in range(0, 320, 2) if pixel(frame, x, y) != background
    }
    assert changed_rows, "nothing was drawn"
    assert any(y < 36 for y in changed_rows) and any(y >= 144 for y in changed_rows)
    assert all(y < 36 or y >= 144 for y in changed_rows), "an overlay left its fifth"


def test_size_follows_the_output_height():
    small = layout_text("ace", 640, 360, scale=0.065)
    large = layout_text("ace", 1920, 1080, scale=0.065)
    assert small and large and large.fontsize == pytest.approx(3 * small.fontsize, abs=1)


def test_long_text_shrinks_and_is_cut_to_fit():
    box = layout_text("x" * 400, 320, 180, scale=0.065)
    assert box is not None and box.text.endswith("…") and len(box.text) < 400
    assert layout_text("a\nb\nc\nd\ne", 320, 180, scale=0.065).text.count("\n") == 2


def test_blank_text_draws_nothing():
    assert overlay_filters("  \n ", None, 320, 180, None) == []
    assert clean_text("a\r\nb\x00") == "a\nb"
