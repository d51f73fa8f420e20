"""The filtergraph builder's joins, run by real ffmpeg on generated pictures and compared frame
by frame, in raw 4:2:0 (no encoder in between)."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from types import SimpleNamespace

import pytest

from timeline.filtergraph import _video_join
from timeline.plan import PlanJoin

FPS = Fraction(30)
W, H = 320, 180
FRAME = W * H * 3 // 2  # bytes of one yuv420p picture
LEFT, RIGHT, OVERLAP = 60, 45, 15


def _frames(graph: str) -> list[bytes]:
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-filter_complex", graph,
         "-map", "[out]", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    data = done.stdout
    assert len(data) % FRAME == 0
    return [data[i : i + FRAME] for i in range(0, len(data), FRAME)]


# Two different moving pictures with colour detail (what chroma resampling would blur).
SOURCES = (
    f"testsrc2=s={W}x{H}:r=30,trim=end_frame={LEFT},format=yuv420p[left];"
    f"testsrc2=s={W}x{H}:r=30,hue=h=140:s=2,trim=end_frame={RIGHT},format=yuv420p[right];"
)
PLAN = SimpleNamespace(fps=FPS, seconds=lambda frames: float(frames / FPS))


@pytest.mark.parametrize("effect", ["fade", "wipeleft", "circleopen"])
@pytest.mark.parametrize("right_is_head", [False, True])
def test_an_xfade_blends_only_the_overlap_and_leaves_every_other_frame_untouched(
    effect, right_is_head
):
    right = OVERLAP if right_is_head else RIGHT  # a segment's head: the overlap alone
    sources = SOURCES.replace(f"trim=end_frame={RIGHT}", f"trim=end_frame={right}")
    join = PlanJoin(index=0, effect=effect, frames=OVERLAP)
    graph = sources + _video_join(
        PLAN, "left", "right", join, LEFT - OVERLAP, "out",
        right_is_overlap=right_is_head,
    )  # fmt: skip
    joined = _frames(graph)
    left_alone = _frames(sources + "[left]null[out];[right]nullsink")
    right_alone = _frames(sources + "[right]null[out];[left]nullsink")

    assert len(joined) == LEFT + right - OVERLAP
    body = LEFT - OVERLAP
    assert joined[:body] == left_alone[:body]  # bit for bit: no trip through 4:4:4
    assert joined[LEFT:] == right_alone[OVERLAP:]
    blended = joined[body:LEFT]
    # (the first blended frame may still be all left)
    assert all(b != left_alone[body + i] for i, b in enumerate(blended[1:], 1))


def test_a_cut_is_the_left_then_the_right():
    graph = SOURCES + _video_join(PLAN, "left", "right", PlanJoin(0, None, 0), LEFT, "out")
    left_alone = _frames(SOURCES + "[left]null[out];[right]nullsink")
    right_alone = _frames(SOURCES + "[right]null[out];[left]nullsink")
    assert _frames(graph) == left_alone + right_alone
