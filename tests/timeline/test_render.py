"""End to end: real renders of the mixed input set with real ffmpeg, checked with ffprobe."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from pathlib import Path
from unittest import mock

import pytest

from tests.timeline.analysis import (
    frame_rgb,
    is_black,
    mono_pcm,
    pixel,
    row_content_width,
    tone_level,
)
from tests.timeline.test_text import NASTY
from timeline.errors import (
    EncoderError,
    InputError,
    PermanentRenderError,
    RenderCancelled,
    RenderError,
)
from timeline.ffmpeg import ffmpeg_binary, ffprobe_binary, run_ffmpeg
from timeline.plan import RenderPlan, render_plan
from timeline.render import RenderResult, probe_sources, render, verify_output
from timeline.spec import Compilation, parse_compilation

pytestmark = pytest.mark.slow

MIXED = ["hd1080p30", "hd720p60", "portrait", "sar43", "phone", "silent", "surround", "short",
         "tenbit", "interlaced"]  # fmt: skip


def compile_(raw: dict, width: int = 320, height: int = 180, fps: float = 30) -> Compilation:
    output = {"width": width, "height": height, "fps": fps, "quality": "draft"}
    return parse_compilation({"output": output, **raw})


def sources_of(compilation: Compilation, folder: Path) -> dict[str, Path]:
    return {s.key: folder / s.path for s in compilation.sources()}


def render_and_plan(compilation, folder, out, **kwargs) -> tuple[RenderResult, RenderPlan]:
    sources = sources_of(compilation, folder)
    plan = render_plan(compilation, probe_sources(compilation, sources))
    return render(compilation, sources, out, **kwargs), plan


def streams(path: Path) -> dict[str, dict]:
    data = json.loads(subprocess.run(
        [ffprobe_binary(), "-v", "error", "-count_frames", "-show_streams", "-of", "json",
         str(path)], capture_output=True, check=True).stdout)  # fmt: skip
    return {s["codec_type"]: s for s in data["streams"]}


def assert_matches_plan(result: RenderResult, plan: RenderPlan, width: int, height: int):
    found = streams(result.path)
    video, audio = found["video"], found["audio"]
    assert int(video["nb_read_frames"]) == plan.total_frames
    assert abs(float(video["duration"]) - plan.planned_s) <= 1 / float(plan.fps)
    assert (video["width"], video["height"]) == (width, height)
    assert video["avg_frame_rate"] == f"{plan.fps.numerator}/{plan.fps.denominator}"
    assert video.get("sample_aspect_ratio", "1:1") == "1:1"
    assert video["pix_fmt"] == "yuv420p"
    # every input converted to one colour space, and the stream says which
    assert (video["color_space"], video["color_range"]) == ("bt709", "tv")
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 2)
    # audio and video end together: within one AAC frame
    assert abs(float(audio["duration"]) - float(video["duration"])) <= 1024 / 48000 + 1e-3
    assert result.duration_s == pytest.approx(plan.planned_s, abs=1 / float(plan.fps))
    # segments joined without a gap or overlap: every frame lasts exactly one frame
    pts = sorted(int(line) for line in subprocess.run(
        [ffprobe_binary(), "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts", "-of", "csv=p=0", str(result.path)],
        capture_output=True, text=True, check=True).stdout.split())  # fmt: skip
    assert len({b - a for a, b in itertools.pairwise(pts)}) == 1


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="session")
def mixed_renders(mixed_dir, tmp_path_factory):
    """The mixed set rendered twice: xfades everywhere, and stingers between clips."""
    out = tmp_path_factory.mktemp("mixed-out")
    base = {"intro": {"path": "intro.mp4"}, "outro": {"path": "outro.mp4"},
            "clips": [{"path": f"{name}.mp4", "creator": name} for name in MIXED]}  # fmt: skip
    xfades = compile_(
        {
            **base,
            "fit": "blur",
            "transitions": {
                "effects": ["wipeleft", "fade", "circleopen", "slideup"],
                "duration": 0.5,
            },
        }
    )
    stingers = compile_({**base, "transitions": {
        "effect": "dissolve", "duration": 0.3, "stingers": [{"path": "stinger.mp4"}]}},
        width=640, height=360, fps=29.97)  # fmt: skip
    progress = []
    return {
        "xfades": render_and_plan(xfades, mixed_dir, out / "xfades.mp4",
                                  thumbnail=out / "xfades.jpg", progress=progress.append),
        "stingers": render_and_plan(stingers, mixed_dir, out / "stingers.mp4", parallel=3),
        "progress": progress,
        "folder": out,
    }  # fmt: skip


def test_mixed_set_with_xfades_renders_to_plan(mixed_renders):
    result, plan = mixed_renders["xfades"]
    assert [j.effect for j in plan.joins] == ["wipeleft", "fade", "circleopen", "slideup"] * 2 + [
        "wipeleft", "fade", "circleopen"]  # fmt: skip
    # the 12-frame clip is shorter than two 15-frame transitions: both of its joins shrink
    short = next(n for n, i in enumerate(plan.items) if i.key == "path:short.mp4")
    assert plan.items[short].frames == 12
    assert plan.joins[short - 1].frames == plan.joins[short].frames == 6
    assert_matches_plan(result, plan, 320, 180)
    assert result.encoder == "libx264" and result.size_bytes == result.path.stat().st_size


def test_mixed_set_with_stingers_renders_to_plan(mixed_renders):
    result, plan = mixed_renders["stingers"]
    assert [i.role for i in plan.items].count("stinger") == len(MIXED) - 1
    assert_matches_plan(result, plan, 640, 360)


def test_output_is_faststart_mp4_with_a_thumbnail(mixed_renders):
    result, _ = mixed_renders["xfades"]
    head = result.path.read_bytes()[: 64 * 1024]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head
    assert result.thumbnail is not None
    assert result.thumbnail.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    assert leftovers(mixed_renders["folder"], {"xfades.mp4", "xfades.jpg", "stingers.mp4"}) == []


def test_progress_rises_to_one(mixed_renders):
    fractions = [p.fraction for p in mixed_renders["progress"]]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert mixed_renders["progress"][-1].out_time_s == pytest.approx(
        mixed_renders["xfades"][1].planned_s, abs=0.1)  # fmt: skip


@pytest.mark.parametrize("fit", ["contain", "blur", "cover"])
def test_portrait_in_landscape_keeps_its_aspect(mixed_dir, tmp_path, fit):
    compilation = compile_({"clips": [{"path": "portrait.mp4"}, {"path": "phone.mp4"}],
                            "fit": fit, "transitions": {"duration": 0}})  # fmt: skip
    result, plan = render_and_plan(compilation, mixed_dir, tmp_path / "out.mp4")
    # smptebars (portrait) at y=60 is all colour bars; the phone clip is turned upright
    for item in plan.items:
        frame = frame_rgb(result.path, plan.seconds(item.start_frame + item.frames // 2))
        centre, edge = pixel(frame, 160, 60), pixel(frame, 8, 60)
        assert not is_black(centre)
        if fit == "contain":
            assert is_black(edge) and is_black(pixel(frame, 311, 60))
            # 9:16 inside 320x180 is 102 pixels wide: not stretched to 320
            assert abs(row_content_width(frame, 60) - 102) <= 4
        else:
            assert not is_black(edge), f"{fit}: the sides should be filled, not barred"


def test_blur_fill_is_blurred_not_stretched(mixed_dir, tmp_path):
    compilation = compile_({"clips": [{"path": "portrait.mp4"}], "fit": "blur"})
    result, _ = render_and_plan(compilation, mixed_dir, tmp_path / "out.mp4")
    frame = frame_rgb(result.path, 0.5)
    # the sharp picture keeps hard bar edges; the blurred fill beside it changes smoothly
    sharp = [pixel(frame, x, 60) for x in range(109, 211)]
    fill = [pixel(frame, x, 60) for x in range(0, 100)]
    jump = lambda row: max(sum(abs(a - b) for a, b in zip(p, q, strict=True))  # noqa: E731
                           for p, q in itertools.pairwise(row))  # fmt: skip
    assert jump(sharp) > 3 * jump(fill)


def test_overlay_texts_full_of_special_characters_render(mixed_dir, tmp_path):
    clips = [{"path": "surround.mp4", "title": t, "creator": c}
             for t, c in zip(NASTY, reversed(NASTY), strict=True)]  # fmt: skip
    compilation = compile_({"clips": clips, "transitions": {"duration": 0.2}})  # all nine
    result, plan = render_and_plan(compilation, mixed_dir, tmp_path / "out.mp4")
    assert_matches_plan(result, plan, 320, 180)


def test_hevc_and_av1_segments_join_by_stream_copy(mixed_dir, tmp_path):
    for codec in ("hevc", "av1"):
        compilation = parse_compilation({
            "output": {"width": 320, "height": 180, "fps": 24, "codec": codec,
                       "quality": "draft"},
            "clips": [{"path": "sar43.mp4"}, {"path": "short.mp4"}, {"path": "silent.mp4"}],
        })  # fmt: skip
        result, plan = render_and_plan(compilation, mixed_dir, tmp_path / f"{codec}.mp4")
        assert_matches_plan(result, plan, 320, 180)
        assert streams(result.path)["video"]["codec_name"] == codec


def test_a_corrupt_clip_fails_permanently_naming_it_and_leaves_nothing(mixed_dir, tmp_path):
    compilation = compile_({"clips": [{"path": "surround.mp4"}, {"path": "corrupt.mp4"}]})
    out = tmp_path / "out" / "x.mp4"
    with pytest.raises(InputError) as caught:
        render(compilation, sources_of(compilation, mixed_dir), out,
               thumbnail=tmp_path / "out" / "x.jpg")  # fmt: skip
    assert "clip 2 (corrupt.mp4)" in caught.value.message
    assert caught.value.source_key == "path:corrupt.mp4"
    assert leftovers(out.parent, set()) == []


@pytest.mark.skipif(Path("/dev/dri/renderD128").exists(), reason="this machine has VAAPI")
def test_an_encoder_that_cannot_start_is_an_encoder_error(mixed_dir, tmp_path):
    compilation = compile_({"clips": [{"path": "surround.mp4"}, {"path": "silent.mp4"}]})
    with pytest.raises(EncoderError, match="h264_vaapi"):
        render(compilation, sources_of(compilation, mixed_dir), tmp_path / "x.mp4",
               encoder="h264_vaapi")  # fmt: skip
    assert leftovers(tmp_path, set()) == []


def test_cancel_stops_every_ffmpeg_and_removes_partial_files(mixed_dir, tmp_path):
    clips = [{"path": f"{name}.mp4"} for name in MIXED * 3]
    compilation = compile_({"clips": clips}, width=640, height=360)
    cancel = threading.Event()
    seen = []

    def on_progress(progress):
        seen.append(progress)
        if progress.fraction > 0.05:
            cancel.set()

    out = tmp_path / "out"
    with pytest.raises(RenderCancelled):
        render(compilation, sources_of(compilation, mixed_dir), out / "x.mp4", cancel=cancel,
               progress=on_progress, workdir=tmp_path / "work", thumbnail=out / "x.jpg")  # fmt: skip
    assert seen and seen[-1].fraction < 1.0
    assert leftovers(out, set()) == []
    assert leftovers(tmp_path / "work", set()) == []
    from tests.timeline.test_ffmpeg import ffmpeg_pids_with

    assert ffmpeg_pids_with(str(tmp_path)) == []


def test_watermark_is_drawn_over_everything(mixed_dir, tmp_path):
    compilation = compile_({
        "intro": {"path": "intro.mp4"},
        "clips": [{"path": "portrait.mp4"}, {"path": "hd1080p30.mp4"}],
        "watermark": {"path": "logo.png", "opacity": 1.0, "position": "bottom-right",
                      "size": 0.15, "margin": 0.02},
    })  # fmt: skip
    result, plan = render_and_plan(compilation, mixed_dir, tmp_path / "out.mp4")
    # 48x24 pixels, 6 pixels in from the bottom-right corner
    for item in plan.items:
        frame = frame_rgb(result.path, plan.seconds(item.start_frame + item.frames // 2))
        r, g, b = pixel(frame, 320 - 6 - 24, 180 - 6 - 12)
        assert r > 200 and g < 60 and b < 60, "the red logo should be there"
        assert pixel(frame, 320 - 6 - 24, 180 - 6 - 40) != (r, g, b)


def test_cli_renders_a_spec_with_local_paths(mixed_dir, tmp_path):
    spec = tmp_path / "job" / "spec.json"
    (tmp_path / "job" / "clips").mkdir(parents=True)
    for name in ("surround.mp4", "short.mp4"):
        (tmp_path / "job" / "clips" / name).write_bytes((mixed_dir / name).read_bytes())
    spec.write_text(json.dumps({"compilation": {
        "output": {"width": 320, "height": 180, "fps": 30, "quality": "draft"},
        "clips": [{"path": "clips/surround.mp4", "title": "a: b"}, {"path": "clips/short.mp4"}],
    }}))  # fmt: skip
    out = tmp_path / "rendered" / "out.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "timeline", "render", str(spec), "-o", str(out), "-q"],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert streams(out)["video"]["nb_read_frames"] == str(30 + 12 - 6)


def test_cli_failure_is_one_line_naming_the_file_and_leaves_nothing(mixed_dir, tmp_path):
    spec = tmp_path / "spec.json"
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "broken.mp4").write_bytes((mixed_dir / "corrupt.mp4").read_bytes())
    (tmp_path / "clips" / "ok.mp4").write_bytes((mixed_dir / "surround.mp4").read_bytes())
    spec.write_text(json.dumps({"clips": [{"path": "clips/ok.mp4"},
                                          {"path": "clips/broken.mp4"}]}))  # fmt: skip
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "timeline", "render", str(spec), "-o", str(out / "x.mp4")],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "clips/broken.mp4" in lines[0], done.stderr
    assert leftovers(out, set()) == [] if out.exists() else True
    assert leftovers(tmp_path, {"spec.json", "clips", "out"}) == []


@pytest.fixture(scope="session")
def music_renders(mixed_dir, tmp_path_factory):
    """intro | 550 Hz clip | silent clip | 350 Hz clip | outro, one second each, hard cuts,
    a 220 Hz music bed and a watermark; once ducked, once not."""
    out = tmp_path_factory.mktemp("music-out")
    found = {}
    for duck in (True, False):
        compilation = compile_({
            "intro": {"path": "intro.mp4"}, "outro": {"path": "outro.mp4"},
            "clips": [{"path": "surround.mp4"}, {"path": "silent.mp4"}, {"path": "sar43.mp4"}],
            "transitions": {"duration": 0},
            "music": {"path": "music.m4a", "volume": 1.0, "duck": duck, "fade_out": 0.5},
            "watermark": {"path": "logo.png", "opacity": 1.0, "position": "top-left"},
        })  # fmt: skip
        with mock.patch("timeline.render.run_ffmpeg", wraps=run_ffmpeg) as ran:
            found[duck] = render_and_plan(compilation, mixed_dir, out / f"duck-{duck}.mp4")
        found["commands", duck] = [list(call.args[0]) for call in ran.call_args_list]
    return found


def music_level(path: Path, start: float, end: float) -> float:
    return tone_level(mono_pcm(path, start, end - start), 220)


def test_music_plays_under_the_clips_only(music_renders):
    result, plan = music_renders[False]
    assert_matches_plan(result, plan, 320, 180)
    assert music_level(result.path, 0.2, 0.8) < 0.005, "no music under the intro"
    assert music_level(result.path, 1.2, 1.8) > 0.05
    assert music_level(result.path, 2.2, 2.8) > 0.05
    assert music_level(result.path, 4.2, 4.8) < 0.005, "no music under the outro"
    # the clips' own sound is there too: 5.1 and 22.05 kHz mono, resampled and mixed down
    assert tone_level(mono_pcm(result.path, 1.2, 0.6), 550) > 0.02
    assert tone_level(mono_pcm(result.path, 3.2, 0.6), 350) > 0.02


def test_music_is_ducked_under_the_clips_sound(music_renders):
    ducked, plain = music_renders[True][0].path, music_renders[False][0].path
    assert music_level(ducked, 1.3, 1.9) < 0.6 * music_level(plain, 1.3, 1.9)
    # and comes back where the clip is silent
    assert music_level(ducked, 2.5, 2.95) > 0.8 * music_level(plain, 2.5, 2.95)


def test_music_fades_out_before_the_outro_without_a_silent_gap(music_renders):
    path = music_renders[False][0].path
    full, fading = music_level(path, 3.0, 3.4), music_level(path, 3.7, 3.95)
    assert 0.002 < fading < 0.7 * full


def _inputs(args: list[str]) -> list[str]:
    return [Path(args[k + 1]).name for k, a in enumerate(args) if a == "-i"]


def test_watermark_and_music_come_from_the_same_single_render(music_renders, mixed_dir):
    result, plan = music_renders[True]
    commands = music_renders["commands", True]
    sources = {p.name for p in mixed_dir.iterdir()}
    encodes = [a for a in commands if "-c:v" in a and a[a.index("-c:v") + 1] != "copy"]
    # every video encode reads only the user's files (never an earlier encode's output) and
    # writes a segment; the watermark is drawn in those encodes, not in a pass of its own
    assert encodes and all(Path(a[-1]).name.startswith("segment-") for a in encodes)
    assert all(set(_inputs(a)) <= sources for a in encodes), encodes
    assert all("logo.png" in _inputs(a) for a in encodes)
    # the music goes in with the sound, which is encoded once (AAC), never twice
    sound = [a for a in commands if "music.m4a" in _inputs(a)]
    assert len(sound) == 1 and Path(sound[0][-1]).name == "audio.m4a"
    assert set(_inputs(sound[0])) <= sources
    # and the last step joins them by stream copy: nothing is re-encoded
    [join] = [a for a in commands if Path(a[-1]).suffix != ".jpg" and a not in encodes + sound]
    assert join[join.index("-c") + 1] == "copy" and "-c:v" not in join and "-c:a" not in join
    assert set(_inputs(join)) == {"segments.txt", "audio.m4a"}
    # each output frame is encoded exactly once: the segments' lengths add up to the video's
    assert sum(int(a[a.index("-frames:v") + 1]) for a in encodes) == plan.total_frames
    for at in (0.5, 2.5, 4.5):
        r, g, b = pixel(frame_rgb(result.path, at), 6 + 24, 6 + 12)
        assert r > 200 and g < 60 and b < 60


def audio_md5(path: Path) -> str:
    return subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-i", str(path), "-map", "0:a", "-f", "md5", "-"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_audio_rendered_in_parts_is_the_same_sound(mixed_dir, tmp_path, monkeypatch):
    # long timelines render their sound a few dozen items at a time; the joins between parts
    # (crossfades and stinger cuts alike) must be exactly those of a single pass
    compilation = compile_({
        "intro": {"path": "intro.mp4"}, "outro": {"path": "outro.mp4"},
        "clips": [{"path": f"{n}.mp4"} for n in ("surround", "sar43", "silent", "tenbit")],
        "transitions": {"duration": 0.3, "stingers": [{"path": "stinger.mp4"}]},
        "music": {"path": "music.m4a"},
    })  # fmt: skip
    whole, plan = render_and_plan(compilation, mixed_dir, tmp_path / "whole.mp4")
    monkeypatch.setattr("timeline.segments.AUDIO_PART_ITEMS", 2)
    parts, _ = render_and_plan(compilation, mixed_dir, tmp_path / "parts.mp4")
    assert_matches_plan(parts, plan, 320, 180)
    assert audio_md5(parts.path) == audio_md5(whole.path)


def test_verification_names_what_is_wrong(mixed_renders):
    result, plan = mixed_renders["xfades"]
    info = verify_output(result.path, planned_s=plan.planned_s, width=320, height=180, fps=30)
    assert info.has_audio and info.width == 320
    with pytest.raises(RenderError) as caught:
        verify_output(result.path, planned_s=plan.planned_s + 1, width=640, height=360, fps=25)
    message = caught.value.message
    assert "640x360" in message and "frame rate" in message and "planned" in message
    assert not isinstance(caught.value, PermanentRenderError)
