"""The plan: frames, transitions, stingers, order and seeds, trims, estimates — no rendering."""

from __future__ import annotations

from fractions import Fraction

import pytest

from timeline.errors import InputError
from timeline.plan import (
    SAMPLE_RATE,
    choose_joins,
    estimate_duration,
    output_fps,
    render_plan,
)
from timeline.probe import probe
from timeline.render import probe_sources
from timeline.spec import Compilation, Source, Transitions, parse_compilation

EFFECTS = ["wipeleft", "fade", "circleopen"]


def compile_(raw: dict) -> Compilation:
    raw = {"output": {"width": 320, "height": 180, "fps": 30}, **raw}
    return parse_compilation(raw)


def plan_of(compilation: Compilation, mixed_dir):
    sources = {s.key: mixed_dir / s.path for s in compilation.sources()}
    return render_plan(compilation, probe_sources(compilation, sources))


def test_intro_clips_outro_overlap_by_the_transition(mixed_dir):
    plan = plan_of(compile_({
        "intro": {"path": "intro.mp4"}, "outro": {"path": "outro.mp4"},
        "clips": [{"path": "hd1080p30.mp4"}, {"path": "surround.mp4"}],
        "transitions": {"effect": "dissolve", "duration": 0.2},
    }), mixed_dir)  # fmt: skip
    assert [i.role for i in plan.items] == ["intro", "clip", "clip", "outro"]
    assert [i.frames for i in plan.items] == [30, 30, 30, 30]
    assert [(j.effect, j.frames) for j in plan.joins] == [("dissolve", 6)] * 3
    assert [i.start_frame for i in plan.items] == [0, 24, 48, 72]
    assert plan.total_frames == 120 - 18
    assert plan.planned_s == pytest.approx(102 / 30)


def test_a_clip_shorter_than_its_transitions_gets_shorter_ones_and_stays(mixed_dir):
    plan = plan_of(compile_({
        "clips": [{"path": "hd1080p30.mp4"}, {"path": "short.mp4"}, {"path": "surround.mp4"}],
        "transitions": {"duration": 1.0},
    }), mixed_dir)  # fmt: skip
    short = plan.items[1]
    assert short.frames == 12
    # never more than half of either neighbour: 6 frames of the 12-frame clip on each side
    assert [j.frames for j in plan.joins] == [6, 6]
    assert all(seg.frames >= seg.head_frames for seg in plan.segments())
    assert plan.total_frames == 30 + 12 + 30 - 12


def test_zero_duration_means_hard_cuts(mixed_dir):
    plan = plan_of(compile_({
        "clips": [{"path": "hd1080p30.mp4"}, {"path": "surround.mp4"}],
        "transitions": {"duration": 0},
    }), mixed_dir)  # fmt: skip
    assert [(j.effect, j.frames) for j in plan.joins] == [(None, 0)]
    assert plan.choices[0].effect is None and plan.choices[0].stinger is None
    assert plan.total_frames == 60


def test_stingers_play_only_between_clips_cycling_in_order(mixed_dir):
    plan = plan_of(compile_({
        "intro": {"path": "intro.mp4"}, "outro": {"path": "outro.mp4"},
        "clips": [{"path": "hd1080p30.mp4"}, {"path": "surround.mp4"}, {"path": "tenbit.mp4"},
                  {"path": "hd720p60.mp4"}],
        "transitions": {"duration": 0.2, "stingers": [{"path": "stinger.mp4"},
                                                      {"path": "short.mp4"}]},
    }), mixed_dir)  # fmt: skip
    roles = [i.role for i in plan.items]
    assert roles == ["intro", "clip", "stinger", "clip", "stinger", "clip", "stinger", "clip",
                     "outro"]  # fmt: skip
    stingers = [i.key for i in plan.items if i.role == "stinger"]
    assert stingers == ["path:stinger.mp4", "path:short.mp4", "path:stinger.mp4"]
    # intro and outro joins keep the xfade; stingers are cut in and out
    assert plan.joins[0].effect == "fade" and plan.joins[-1].effect == "fade"
    assert all(j.frames == 0 for j in plan.joins[1:-1])
    # the planned length counts the stingers' own length (15 + 12 + 15 frames)
    assert plan.total_frames == 30 * 6 + 15 + 12 + 15 - 2 * 6


def test_effects_keep_the_users_order():
    choices = choose_joins(Transitions(effects=EFFECTS), ["intro"] + ["clip"] * 6 + ["outro"])
    assert [c.effect for c in choices] == (EFFECTS * 3)[:7]
    assert choices[0].between == ("intro", "clip") and choices[-1].between == ("clip", "outro")


def test_random_order_is_reproducible_by_seed():
    roles = ["clip"] * 12
    stingers = [Source(path=f"s{i}.mp4") for i in range(4)]
    same = [
        choose_joins(Transitions(effects=EFFECTS, order="random", seed=7, stingers=[]), roles),
        choose_joins(Transitions(effects=EFFECTS, order="random", seed=7), roles),
    ]
    assert same[0] == same[1]
    other = choose_joins(Transitions(effects=EFFECTS, order="random", seed=8), roles)
    assert [c.effect for c in other] != [c.effect for c in same[0]]
    # seed None means seed 0
    assert choose_joins(Transitions(effects=EFFECTS, order="random"), roles) == choose_joins(
        Transitions(effects=EFFECTS, order="random", seed=0), roles
    )
    picked = Transitions(stingers=stingers, order="random", seed=3)
    twice = [[c.stinger for c in choose_joins(picked, roles)] for _ in range(2)]
    assert twice[0] == twice[1] and len(set(twice[0])) > 1


def test_random_order_never_reorders_the_clips(mixed_dir):
    names = ["hd1080p30.mp4", "surround.mp4", "tenbit.mp4", "hd720p60.mp4", "sar43.mp4"]
    plan = plan_of(compile_({
        "clips": [{"path": n} for n in names],
        "transitions": {"effects": EFFECTS, "order": "random", "seed": 5},
    }), mixed_dir)  # fmt: skip
    assert [i.key for i in plan.items] == [f"path:{n}" for n in names]
    assert [j.effect for j in plan.joins] == [c.effect for c in plan.choices]


def test_trims_pick_whole_frames_of_the_clip(mixed_dir):
    plan = plan_of(compile_({"clips": [{"path": "portrait.mp4", "start": 0.2, "end": 0.9}]}),
                   mixed_dir)  # fmt: skip
    assert plan.items[0].source_start_s == pytest.approx(0.2)
    assert plan.items[0].frames == 21


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        ({"path": "short.mp4", "start": 3.0}, "`start` 3 s is past its end"),
        ({"path": "short.mp4", "end": 5.0}, "`end` 5 s is past its end"),
        ({"path": "logo.png"}, "still image"),
        ({"path": "music.m4a"}, "no video stream"),
    ],
)
def test_a_clip_that_cannot_play_is_a_permanent_error_naming_it(mixed_dir, clip, message):
    compilation = compile_({"clips": [{"path": "surround.mp4"}, clip]})
    with pytest.raises(InputError, match=message) as caught:
        plan_of(compilation, mixed_dir)
    assert caught.value.label.startswith(f"clip 2 ({clip['path']})")
    assert caught.value.source_key == f"path:{clip['path']}"


def test_music_without_sound_is_refused(mixed_dir):
    compilation = compile_({"clips": [{"path": "surround.mp4"}], "music": {"path": "silent.mp4"}})
    with pytest.raises(InputError, match=r"music .*no sound"):
        plan_of(compilation, mixed_dir)


def test_music_plays_under_the_clips_and_fades_out_where_the_outro_begins(mixed_dir):
    plan = plan_of(compile_({
        "intro": {"path": "intro.mp4"}, "outro": {"path": "outro.mp4"},
        "clips": [{"path": "hd1080p30.mp4"}, {"path": "surround.mp4"}],
        "music": {"path": "music.m4a", "fade_out": 0.5},
    }), mixed_dir)  # fmt: skip
    music = plan.music
    assert music is not None
    assert music.start_frame == plan.items[1].start_frame
    assert music.end_frame == plan.items[-1].start_frame
    assert music.fade_frames == 15


def test_audio_offsets_come_from_frames_and_never_drift(mixed_dir):
    plan = plan_of(compile_({
        "output": {"width": 320, "height": 180, "fps": 29.97},
        "clips": [{"path": n} for n in ["hd1080p30.mp4", "sar43.mp4", "silent.mp4"] * 5],
        "transitions": {"duration": 0.3},
    }), mixed_dir)  # fmt: skip
    assert plan.fps == Fraction(30000, 1001)
    lengths = [plan.sample_at(i.end_frame) - plan.sample_at(i.start_frame) for i in plan.items]
    overlaps = [
        plan.sample_at(plan.items[j.index + 1].start_frame + j.frames)
        - plan.sample_at(plan.items[j.index + 1].start_frame)
        for j in plan.joins
    ]
    assert sum(lengths) - sum(overlaps) == plan.sample_at(plan.total_frames)
    assert plan.sample_at(plan.total_frames) == round(plan.planned_s * SAMPLE_RATE)


def test_estimate_matches_the_real_plan(mixed_dir):
    compilation = compile_({
        "intro": {"path": "intro.mp4"}, "outro": {"path": "outro.mp4"},
        "clips": [{"path": "hd1080p30.mp4", "start": 0.1}, {"path": "short.mp4"},
                  {"path": "portrait.mp4", "end": 0.8}],
        "transitions": {"duration": 0.5, "stingers": [{"path": "stinger.mp4"}]},
    })  # fmt: skip
    durations = {s.key: probe(mixed_dir / s.path).video_length_s for s in compilation.sources()}
    assert estimate_duration(compilation, durations) == pytest.approx(
        plan_of(compilation, mixed_dir).planned_s
    )


def test_estimate_counts_unknown_lengths_honestly():
    compilation = compile_({
        "clips": [{"url": "https://example.com/a"}, {"url": "https://example.com/b", "start": 5,
                                                     "end": 15}],
        "transitions": {"duration": 1},
    })  # fmt: skip
    assert estimate_duration(compilation, {}, unknown_s=30) == pytest.approx(30 + 10 - 1)
    known = {"url:https://example.com/a": 4.0}
    assert estimate_duration(compilation, known) == pytest.approx(4 + 10 - 1)


def test_ntsc_rates_are_exact():
    assert output_fps(29.97) == Fraction(30000, 1001)
    assert output_fps(59.94) == Fraction(60000, 1001)
    assert output_fps(25) == 25


def test_the_same_seed_gives_the_same_plan_and_another_seed_another(mixed_dir):
    def plan_for(seed):
        return plan_of(compile_({
            "intro": {"path": "intro.mp4"},
            "clips": [{"path": n} for n in ["surround.mp4", "sar43.mp4", "silent.mp4"] * 3],
            "transitions": {"effects": [*EFFECTS, "dissolve", "radial"], "order": "random",
                            "seed": seed, "stingers": [{"path": "stinger.mp4"},
                                                       {"path": "short.mp4"}]},
        }), mixed_dir)  # fmt: skip

    first, again, other = plan_for(11), plan_for(11), plan_for(12)
    assert first == again
    assert first.choices != other.choices
    assert [i.key for i in first.items if i.role == "clip"] == [
        i.key for i in other.items if i.role == "clip"
    ]
