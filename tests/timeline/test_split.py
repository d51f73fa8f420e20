"""A render split in parts across machines: planning the parts, rendering each, the sound, the
join; checked frame by frame against the whole render with real ffmpeg."""

from __future__ import annotations

import itertools
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import msgspec
import pytest

from tests.media import FFMPEG, make_audio, make_clip, make_image
from tests.timeline.test_ffmpeg import ffmpeg_pids_with
from timeline.errors import PartRejected, PermanentRenderError, PlanMismatch, RenderCancelled
from timeline.ffmpeg import ffmpeg_binary, ffprobe_binary
from timeline.plan import RenderPlan, render_plan
from timeline.probe import probe
from timeline.render import probe_sources, render, video_spans
from timeline.spec import Compilation, parse_compilation
from timeline.split import (
    Part,
    audio_sources,
    join_parts,
    parts_that_pay,
    render_audio,
    render_part,
    split_plan,
    work_s,
)

pytestmark = pytest.mark.slow

PATTERNS = ["testsrc2", "smptebars", "rgbtestsrc", "testsrc", "smptehdbars"]
RATES = [30, 25, 24, 60, 30]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Ten short clips of several rates (one silent), intro, outro, a stinger, a logo, music."""
    root = tmp_path_factory.mktemp("split-media")
    for k in range(10):
        make_clip(root / f"c{k}.mp4", duration=0.8 + 0.1 * k, fps=RATES[k % 5],
                  pattern=PATTERNS[k % 5], tone_hz=300 + 50 * k,
                  audio=None if k == 4 else "stereo")  # fmt: skip
    make_clip(root / "intro.mp4", duration=1.0, pattern="rgbtestsrc", tone_hz=250)
    make_clip(root / "outro.mp4", duration=1.0, pattern="rgbtestsrc", tone_hz=260)
    make_clip(root / "stinger.mp4", duration=0.5, pattern="smptehdbars", tone_hz=900)
    make_image(root / "logo.png", width=64, height=32)
    make_audio(root / "music.m4a", duration=2.0)
    return root


def compilation(stingers: bool = False) -> Compilation:
    """Intro, ten clips, outro: xfades of three effects everywhere (12 items), or stingers
    between the clips and xfades to the intro and outro (21 items); overlays, watermark,
    music."""
    transitions: dict = {"effects": ["fade", "wipeleft", "circleopen"], "duration": 0.3}
    if stingers:
        transitions["stingers"] = [{"path": "stinger.mp4"}]
    return parse_compilation({
        "output": {"width": 320, "height": 180, "fps": 30, "quality": "draft"},
        "intro": {"path": "intro.mp4"}, "outro": {"path": "outro.mp4"},
        "clips": [{"path": f"c{k}.mp4", "creator": f"@c{k}"} for k in range(10)],
        "transitions": transitions,
        "watermark": {"path": "logo.png"}, "music": {"path": "music.m4a"},
    })  # fmt: skip


@dataclass
class Case:
    compilation: Compilation
    sources: dict[str, Path]
    plan: RenderPlan


def case_of(stingers: bool, media: Path) -> Case:
    chosen = compilation(stingers)
    sources = {s.key: media / s.path for s in chosen.sources()}
    return Case(chosen, sources, render_plan(chosen, probe_sources(chosen, sources)))


@pytest.fixture(scope="module")
def xfade_case(media) -> Case:
    return case_of(False, media)


@dataclass
class Rendered:
    case: Case
    parts: list[Part]
    whole: Path
    files: list[Path]
    audio: Path
    split: Path


def render_whole_and_split(case: Case, renderers: int, folder: Path) -> Rendered:
    parts = split_plan(case.plan, renderers, parallel=2, min_work_s=0)
    assert len(parts) == renderers
    # x264's pictures depend on its thread count, which follows `parallel` (cores // parallel),
    # so both sides take the same `parallel`; and the whole render, encoding that many segments
    # at once, cuts the same segments as the parts hold
    parallel = 2 * renderers
    assert [s for p in parts for s in p.segments] == video_spans(case.plan, parallel, parallel)
    whole = render(case.compilation, case.sources, folder / "whole.mp4", parallel=parallel)
    probes = probe_sources(case.compilation, case.sources)
    files = []
    for part in parts:
        # as a farmhand would: the first probes every source itself; the others have only the
        # files their part reads, and the plan from the board's probes of the rest
        if part.index == 0:
            given, known = case.sources, None
        else:
            given, known = {k: case.sources[k] for k in part.sources}, probes
        done = render_part(case.compilation, given, part, folder / f"part-{part.index}.mp4",
                           media=known, parallel=parallel)  # fmt: skip
        assert done.frames == part.frames and done.encoder == "libx264"
        files.append(done.path)
    sound = render_audio(case.compilation, {k: case.sources[k] for k in audio_sources(case.plan)},
                         folder / "audio.m4a", media=probes, fingerprint=parts[0].plan)  # fmt: skip
    # the join takes the parts in any order, and needs no source at all
    joined = join_parts(parts[::-1], files[::-1], sound.path, folder / "split.mp4",
                        thumbnail=folder / "split.jpg")  # fmt: skip
    assert joined.encoder == "libx264" and joined.thumbnail is not None
    return Rendered(case, parts, whole.path, files, sound.path, joined.path)


@pytest.fixture(scope="module")
def xfades(xfade_case, tmp_path_factory) -> Rendered:
    return render_whole_and_split(xfade_case, 3, tmp_path_factory.mktemp("split-xfades"))


@pytest.fixture(scope="module")
def stingers(media, tmp_path_factory) -> Rendered:
    return render_whole_and_split(case_of(True, media), 2, tmp_path_factory.mktemp("split-st"))


def frame_times(path: Path) -> list[str]:
    return subprocess.run(
        [ffprobe_binary(), "-v", "error", "-select_streams", "v:0", "-show_entries",
         "frame=pts_time", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip


def durations(path: Path) -> dict[str, float]:
    lines = subprocess.run(
        [ffprobe_binary(), "-v", "error", "-show_entries", "stream=codec_type,duration",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return {kind: float(seconds) for kind, seconds in (line.split(",") for line in lines)}


def decoded_md5s(path: Path, stream: str) -> list[str]:
    """One line per decoded frame (timestamps, size, md5) of ``stream`` ("v" or "a")."""
    out = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-i", str(path), "-map", f"0:{stream}",
         "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if not line.startswith("#")]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- planning the parts


@pytest.mark.parametrize("renderers", [2, 3, 4, 5, 6])
def test_parts_are_runs_of_whole_segments_that_never_cut_a_transition(xfade_case, renderers):
    plan = xfade_case.plan
    parts = split_plan(plan, renderers, parallel=2, min_work_s=0)
    assert [(p.index, p.of) for p in parts] == [(k, renderers) for k in range(renderers)]
    assert parts[0].start_frame == 0 and parts[-1].end_frame == plan.total_frames
    for before, after in itertools.pairwise(parts):
        assert before.end_frame == after.start_frame
        assert before.items[1] + 1 == after.items[0]
    overlaps = [(plan.items[j.index + 1].start_frame, j.frames) for j in plan.joins if j.frames]
    assert len(overlaps) == 11
    for start, frames in overlaps:
        # no part starts inside a transition: each is rendered whole by one part
        assert not any(start <= p.start_frame < start + frames for p in parts)
        assert any(p.start_frame <= start and start + frames <= p.end_frame for p in parts)
    # about equal work: no part holds more than twice the work of another
    work = [sum(plan.segment_cost(s) for s in plan.segments(p.segments)) for p in parts]
    assert max(work) < 2 * min(work)


def test_a_part_names_every_file_it_reads(xfade_case):
    plan = xfade_case.plan
    parts = split_plan(plan, 3, parallel=2, min_work_s=0)
    for part in parts:
        first, last = part.items
        ends_in_xfade = last + 1 < len(plan.items)
        shown = range(first, last + 1 + ends_in_xfade)
        assert set(part.sources) == {plan.items[k].key for k in shown} | {"path:logo.png"}
    assert set(audio_sources(plan)) == set(xfade_case.sources) - {"path:c4.mp4",
                                                                   "path:logo.png"}  # fmt: skip


def test_a_split_that_does_not_pay_is_one_part_cut_as_render_cuts_it(xfade_case):
    plan = xfade_case.plan
    # a few seconds of 320x180 is far below the work a part must hold
    [whole] = split_plan(plan, 3)
    assert (whole.start_frame, whole.frames) == (0, plan.total_frames)
    assert list(whole.segments) == video_spans(plan, 2, 2)
    assert parts_that_pay(plan, 3, min_work_s=0) == 3
    assert parts_that_pay(plan, 3, min_work_s=work_s(plan) / 2.5) == 2
    assert parts_that_pay(plan, 50, min_work_s=0) == len(plan.items)


def test_a_part_travels_as_json(xfade_case):
    parts = split_plan(xfade_case.plan, 3, parallel=2, min_work_s=0)
    assert msgspec.json.decode(msgspec.json.encode(parts), type=list[Part]) == parts


# ---------------------------------------------------------------- whole and split renders


@pytest.mark.parametrize("rendered", ["xfades", "stingers"])
def test_the_split_render_is_frame_exact_with_the_whole_render(rendered, request):
    done: Rendered = request.getfixturevalue(rendered)
    plan = done.case.plan
    times = frame_times(done.split)
    assert len(times) == plan.total_frames
    assert times == frame_times(done.whole)
    lengths, whole_lengths = durations(done.split), durations(done.whole)
    assert abs(lengths["audio"] - lengths["video"]) <= 1024 / 48000 + 1e-3
    assert abs(lengths["audio"] - whole_lengths["audio"]) <= 1024 / 48000
    # the same encoder settings and segment boundaries: the very same pictures and sound
    assert decoded_md5s(done.split, "v") == decoded_md5s(done.whole, "v")
    assert decoded_md5s(done.split, "a") == decoded_md5s(done.whole, "a")


def test_each_part_is_its_frames_of_picture_only(xfades):
    for part, path in zip(xfades.parts, xfades.files, strict=True):
        assert set(durations(path)) == {"video"}
        assert len(frame_times(path)) == part.frames


def test_a_part_planned_from_other_media_is_refused_before_any_encode(xfade_case, media,
                                                                      tmp_path):  # fmt: skip
    parts = split_plan(xfade_case.plan, 3, parallel=2, min_work_s=0)
    # this machine's copy of clip 4 is another file than the one the split was planned from
    sources = {**xfade_case.sources, "path:c3.mp4": media / "c9.mp4"}
    out = tmp_path / "out"
    with mock.patch("timeline.render.run_ffmpeg") as ran, pytest.raises(PlanMismatch) as caught:
        render_part(xfade_case.compilation, sources, parts[1], out / "part.mp4")
    assert isinstance(caught.value, PermanentRenderError)
    assert "part 2 of 3" in caught.value.message and "clip 4 (c3.mp4)" in caught.value.message
    ran.assert_not_called()
    assert leftovers(out) == []
    # and a part that says other frames than its own segments hold is refused too
    moved = msgspec.structs.replace(parts[1], start_frame=parts[1].start_frame + 1)
    with pytest.raises(PlanMismatch, match="does not fit the plan"):
        render_part(xfade_case.compilation, xfade_case.sources, moved, out / "part.mp4")
    assert leftovers(out) == []


def test_the_audio_track_of_another_plan_is_refused(xfade_case, media, tmp_path):
    fingerprint = split_plan(xfade_case.plan, 3, parallel=2, min_work_s=0)[0].plan
    sources = {**xfade_case.sources, "path:c3.mp4": media / "c9.mp4"}
    with pytest.raises(PlanMismatch, match="the audio track"):
        render_audio(xfade_case.compilation, sources, tmp_path / "audio.m4a",
                     fingerprint=fingerprint)  # fmt: skip
    assert leftovers(tmp_path) == []


def test_a_renderer_given_the_probes_probes_no_source(xfade_case, tmp_path):
    probes = probe_sources(xfade_case.compilation, xfade_case.sources)
    with mock.patch("timeline.render.probe", wraps=probe) as probed:
        render_audio(xfade_case.compilation, xfade_case.sources, tmp_path / "audio.m4a",
                     media=probes)  # fmt: skip
    # only its own output, to verify it
    assert [Path(call.args[0]).parent for call in probed.call_args_list] == [tmp_path]


def test_cancel_mid_part_kills_every_ffmpeg_and_leaves_nothing(xfade_case, tmp_path):
    part = split_plan(xfade_case.plan, 2, parallel=2, min_work_s=0)[0]
    cancel = threading.Event()
    seen = []

    def on_progress(progress):
        seen.append(progress)
        cancel.set()

    out = tmp_path / "out"
    with pytest.raises(RenderCancelled):
        render_part(xfade_case.compilation, xfade_case.sources, part, out / "part.mp4",
                    cancel=cancel, progress=on_progress, workdir=tmp_path / "work",
                    parallel=1)  # fmt: skip
    assert seen and seen[-1].fraction < 1.0
    assert leftovers(out) == [] and leftovers(tmp_path / "work") == []
    assert ffmpeg_pids_with(str(tmp_path)) == []


# ---------------------------------------------------------------- what the join refuses


def test_the_join_refuses_a_file_in_another_part_s_place(xfades, tmp_path):
    files = [xfades.files[1], xfades.files[0], xfades.files[2]]
    with pytest.raises(PartRejected) as caught:
        join_parts(xfades.parts, files, xfades.audio, tmp_path / "out.mp4")
    assert caught.value.part == 0 and "part 1 of 3" in caught.value.message
    assert "frames" in caught.value.message
    assert leftovers(tmp_path) == []


def test_the_join_refuses_a_part_encoded_with_other_settings(xfades, tmp_path):
    # the right frames, size and codec, but another encoder's settings: its stream headers
    # differ, so its packets cannot be played as one stream with the others'
    other = tmp_path / "other.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
         "-frames:v", str(xfades.parts[1].frames), "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", str(other)],
        check=True,
    )  # fmt: skip
    files = [xfades.files[0], other, xfades.files[2]]
    with pytest.raises(PartRejected) as caught:
        join_parts(xfades.parts, files, xfades.audio, tmp_path / "out" / "x.mp4")
    assert caught.value.part == 1 and "encoded unlike part 1" in caught.value.message
    assert leftovers(tmp_path / "out") == []


def test_the_join_refuses_parts_of_two_splits_and_a_missing_part(xfades, tmp_path):
    halves = split_plan(xfades.case.plan, 2, parallel=2, min_work_s=0)
    with pytest.raises(PartRejected, match="another split"):
        join_parts([xfades.parts[0], halves[1]], xfades.files[:2], xfades.audio,
                   tmp_path / "out.mp4")  # fmt: skip
    with pytest.raises(PartRejected, match="another split"):
        join_parts(xfades.parts[:2], xfades.files[:2], xfades.audio, tmp_path / "out.mp4")
    assert leftovers(tmp_path) == []


def test_the_join_refuses_an_audio_track_of_another_length(xfades, media, tmp_path):
    with pytest.raises(PartRejected) as caught:
        join_parts(xfades.parts, xfades.files, media / "music.m4a", tmp_path / "out.mp4")
    assert caught.value.part is None and "audio track" in caught.value.message
    assert leftovers(tmp_path) == []
