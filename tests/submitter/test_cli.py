"""clipfarm-submit against a real board process: idempotent bulk submit, local checks that stop
everything, rejected jobs and bad tokens reported, and --wait downloading a real render."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading

import pytest

from tests.harness import RunningFarmhand, ffprobe
from tests.submitter.conftest import ROOT, run_submit


def write_hundred_rows(folder, media_dir):
    """100 rows, 100 compilations of one clip each, from three distinct local files."""
    for name in ("a.mp4", "b.mp4", "silent.mp4"):
        shutil.copy(media_dir / name, folder / name)
    rows = ["compilation,clip,start,end,creator,title,width,height,quality"]
    for n in range(100):
        clip = ("a.mp4", "b.mp4", "silent.mp4")[n % 3]
        rows.append(f"c{n:03},{clip},0,{1 + n % 5 * 0.1:.1f},maker {n},take {n},320,180,draft")
    (folder / "hundred.csv").write_text("\n".join(rows) + "\n")
    return folder / "hundred.csv"


def test_a_100_row_manifest_submitted_twice_makes_100_jobs(alice, media_dir, tmp_path):
    manifest = write_hundred_rows(tmp_path, media_dir)
    first = alice.submit(str(manifest))
    assert first.returncode == 0, first.stderr
    assert "100 new, 0 existing, 0 rejected" in first.stderr
    assert "3 files, 3 new" in first.stderr  # three distinct files, each uploaded once
    assert alice.jobs_total() == 100
    stored = alice.stored_bytes()
    assert stored == sum((tmp_path / n).stat().st_size for n in ("a.mp4", "b.mp4", "silent.mp4"))

    again = alice.submit(str(manifest))
    assert again.returncode == 0, again.stderr
    assert "0 new, 100 existing, 0 rejected" in again.stderr
    assert again.stdout.count("submitted before (idempotency key)") == 100
    assert alice.jobs_total() == 100
    assert alice.stored_bytes() == stored
    ids = lambda out: {line.split()[1] for line in out.splitlines()[1:]}  # noqa: E731
    assert ids(first.stdout) == ids(again.stdout) and len(ids(first.stdout)) == 100


@pytest.mark.parametrize("engine", ["sqlite"])
def test_dry_run_reports_a_missing_file_and_a_bad_time_by_line_and_submits_nothing(
    alice, media_dir, tmp_path
):
    shutil.copy(media_dir / "a.mp4", tmp_path / "a.mp4")
    manifest = tmp_path / "week.csv"
    manifest.write_text(
        "compilation,clip,start,end\n"
        "week 47,a.mp4,0,1.5\n"
        "week 47,clips/gone.mp4,,\n"
        "week 47,a.mp4,1:7x,\n"
        "week 48,a.mp4,,\n"
    )
    for args in (["--dry-run"], []):  # without --dry-run a bad manifest stops everything too
        done = alice.submit(str(manifest), *args)
        assert done.returncode == 1
        assert f"{manifest}:3: compilation 'week 47', clip 2: file not found: clips/gone.mp4" in (
            done.stderr
        )
        assert f"{manifest}:4: compilation 'week 47', clip 3: start: '1:7x' is not a time" in (
            done.stderr
        )
        assert "2 problems" in done.stderr and "nothing was uploaded or submitted" in done.stderr
    assert alice.jobs_total() == 0
    assert alice.stored_bytes() == 0  # no media uploaded


@pytest.mark.parametrize("engine", ["sqlite"])
def test_dry_run_of_a_good_manifest_says_so_and_submits_nothing(alice, media_dir, tmp_path):
    shutil.copy(media_dir / "a.mp4", tmp_path / "a.mp4")
    manifest = tmp_path / "ok.jsonl"
    manifest.write_text(json.dumps({"clips": [{"path": "a.mp4", "start": "0:00.5"}]}) + "\n")
    done = alice.submit(str(manifest), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "1 compilation, 1 clips, 1 local files" in done.stderr
    assert alice.jobs_total() == 0 and alice.stored_bytes() == 0


@pytest.mark.parametrize("engine", ["sqlite"])
def test_json_manifest_problems_name_the_line_of_the_bad_field(alice, media_dir, tmp_path):
    shutil.copy(media_dir / "a.mp4", tmp_path / "a.mp4")
    manifest = tmp_path / "batch.json"
    manifest.write_text(
        """[
  {"title": "good", "clips": [{"path": "a.mp4"}]},
  {"title": "bad",
   "clips": [
     {"path": "a.mp4", "start": 3, "end": 1},
     {"url": "https://example.com/v", "start": "soon"}
   ],
   "transitions": {"effect": "fdae"},
   "output": {"width": 641}
  }
]
"""
    )
    done = alice.submit(str(manifest), "--dry-run")
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if line.startswith(str(manifest))]
    assert problems == [
        f"{manifest}:5: item 2, clip 1: `end` (1.0) must be after `start` (3.0)",
        f"{manifest}:6: item 2, clip 2: start: 'soon' is not a time; write seconds (12.5) "
        "or mm:ss (1:02.5)",
        f"{manifest}:8: item 2: unknown transition 'fdae'; did you mean fade?",
        f"{manifest}:9: item 2: output: output size must be even in both directions (got 641x720)",
    ]


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_changed_compilation_is_a_new_job_and_a_reused_key_a_conflict(alice, media_dir, tmp_path):
    shutil.copy(media_dir / "a.mp4", tmp_path / "a.mp4")
    manifest = tmp_path / "m.jsonl"
    item = {"title": "t", "clips": [{"path": "a.mp4"}], "idempotency_key": "mine-1"}
    manifest.write_text(json.dumps(item) + "\n")
    assert alice.submit(str(manifest)).returncode == 0
    item["title"] = "t2"  # same explicit key, another body: the board refuses it (409)
    manifest.write_text(json.dumps(item) + "\n" + json.dumps({"clips": [{"path": "a.mp4"}]}))
    done = alice.submit(str(manifest))
    assert done.returncode == 1
    rows = done.stdout.splitlines()
    assert rows[1].split()[:3] == ["1", "-", "rejected"] and "HTTP 409" in rows[1]
    assert "new job" in rows[2]
    assert alice.jobs_total() == 2


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_job_the_board_rejects_is_shown_with_its_line_and_fails_the_run(
    alice, media_dir, tmp_path
):
    shutil.copy(media_dir / "a.mp4", tmp_path / "a.mp4")  # 2 s long
    manifest = tmp_path / "m.csv"
    manifest.write_text("compilation,clip,start\nfine,a.mp4,0.5\n\ntoo late,a.mp4,30\n")
    done = alice.submit(str(manifest))
    assert done.returncode == 1
    late = next(line for line in done.stdout.splitlines() if "too late" in line)
    assert late.split()[:3] == ["4", "-", "rejected"]
    assert "HTTP 400" in late and "past the end" in late
    assert alice.jobs_total() == 1


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_wrong_token_is_refused_with_how_to_get_a_right_one(board, media_dir, tmp_path):
    shutil.copy(media_dir / "a.mp4", tmp_path / "a.mp4")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"clips": [{"path": "a.mp4"}]}) + "\n")
    done = run_submit(board, "cf_not-a-real-token", str(manifest))
    assert done.returncode == 2
    assert "HTTP 401" in done.stderr and "board token create --role submitter" in done.stderr
    done = run_submit(board, board.token("farmhand", "pc"), str(manifest))
    assert done.returncode == 2 and "HTTP 403" in done.stderr and "submitter token" in done.stderr


def test_the_console_script_is_installed():
    script = ROOT / ".venv" / "bin" / "clipfarm-submit"
    exe = str(script) if script.exists() else shutil.which("clipfarm-submit")
    assert exe, "clipfarm-submit is not installed (pip install -e .)"
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "--dry-run" in done.stdout


def submit_with_a_farmhand(alice, manifest, tmp_path):
    """``clipfarm-submit MANIFEST --wait`` while a farmhand ``pc1`` renders; (the finished
    run, the farmhand, stopped, for its log)."""
    hand = RunningFarmhand(alice.board, tmp_path / "fh", "pc1").start()
    try:
        done = alice.submit(
            str(manifest), "--wait", "--out", str(tmp_path / "out"), "--timeout", "150", timeout=200
        )
    finally:
        hand.stop()
    return done, hand


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite"])
def test_wait_follows_the_job_and_downloads_a_playable_video(alice, media_dir, tmp_path):
    for name in ("intro.mp4", "a.mp4", "silent.mp4", "outro.mp4", "logo.png"):
        shutil.copy(media_dir / name, tmp_path / name)
    manifest = tmp_path / "show.json"
    manifest.write_text(
        json.dumps(
            [
                {
                    "title": "show: 1/1",
                    "output": {"width": 320, "height": 180, "fps": 30, "quality": "draft"},
                    "intro": {"path": "intro.mp4"},
                    "outro": {"path": "outro.mp4"},
                    "clips": [
                        {"path": "a.mp4", "end": 1.5, "creator": "alice", "title": "one"},
                        {"path": "silent.mp4"},
                    ],
                    "transitions": {"effect": "dissolve", "duration": 0.3},
                    "watermark": {"path": "logo.png", "opacity": 0.5},
                }
            ],
            indent=2,
        )
    )
    done, hand = submit_with_a_farmhand(alice, manifest, tmp_path)
    assert done.returncode == 0, done.stderr + hand.log()
    saved = list((tmp_path / "out").glob("*.mp4"))
    assert len(saved) == 1 and saved[0].name.startswith("show-1-1-j")
    assert f"-> {saved[0]}" in done.stdout and "succeeded" in done.stdout
    assert "on pc1" in done.stderr  # followed live: which farmhand took it
    info = ffprobe(saved[0])
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 180)
    expected = 1.0 + 1.5 + 1.5 + 1.0 - 3 * 0.3  # intro, clip, silent clip, outro, three joins
    assert abs(float(info["format"]["duration"]) - expected) < 0.15
    # a re-run finds the job done and the video already there: nothing new, nothing fetched
    again = alice.submit(str(manifest), "--wait", "--out", str(tmp_path / "out"), "--timeout", "30")
    assert again.returncode == 0, again.stderr
    assert "0 new, 1 existing" in again.stderr and "saved" not in again.stderr
    assert list((tmp_path / "out").glob("*.mp4")) == saved


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_batch_too_large_for_one_request_is_sent_in_halves(alice, tmp_path):
    caption = "x" * 480  # 100 jobs x 50 captioned clips: over the board's 4 MiB request limit
    manifest = tmp_path / "big.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(
                {
                    "title": f"big {n}",
                    "clips": [
                        {
                            "url": f"https://example.com/v/{n}/{i}",
                            "title": caption,
                            "creator": caption,
                        }
                        for i in range(50)
                    ],
                }
            )
            + "\n"
            for n in range(100)
        )
    )
    assert manifest.stat().st_size > 4 * 1024**2
    done = alice.submit(str(manifest), "--chunk", "500")
    assert done.returncode == 0, done.stderr
    assert "100 new, 0 existing, 0 rejected" in done.stderr
    assert alice.jobs_total() == 100


@pytest.mark.parametrize("engine", ["sqlite"])
def test_the_same_compilation_twice_in_a_manifest_is_one_job(alice, media_dir, tmp_path):
    shutil.copy(media_dir / "a.mp4", tmp_path / "a.mp4")
    shutil.copy(media_dir / "a.mp4", tmp_path / "copy-of-a.mp4")  # same bytes, another name
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"title": "t", "clips": [{"path": "a.mp4", "end": 1}]})
        + "\n"
        + json.dumps({"clips": [{"end": 1.0, "path": "copy-of-a.mp4"}], "title": "t"})
        + "\n"
    )
    done = alice.submit(str(manifest))
    assert done.returncode == 0, done.stderr
    assert "item 2 (line 2) is the same compilation as line 1; it is submitted once" in done.stderr
    assert "1 files, 1 new" in done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert len(rows) == 2 and rows[0][1] == rows[1][1]
    assert alice.jobs_total() == 1


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite"])
def test_wait_exits_1_and_says_why_when_a_job_fails(alice, media_dir, tmp_path):
    """One good compilation and one whose clip URL answers 404: the good video is saved, the
    bad job is shown failed with the reason, and the run exits 1."""
    shutil.copy(media_dir / "a.mp4", tmp_path / "a.mp4")
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gone = f"http://127.0.0.1:{server.server_address[1]}/gone.mp4"
    small = {"width": 320, "height": 180, "fps": 30, "quality": "draft"}
    manifest = tmp_path / "mixed.json"
    manifest.write_text(json.dumps([
        {"title": "good one", "output": small, "clips": [{"path": "a.mp4"}]},
        {"title": "bad one", "output": small, "clips": [{"path": "a.mp4"}, {"url": gone}]},
    ]))  # fmt: skip
    try:
        done, hand = submit_with_a_farmhand(alice, manifest, tmp_path)
    finally:
        server.shutdown()
    assert done.returncode == 1, done.stdout + done.stderr + hand.log()
    saved = list((tmp_path / "out").glob("*.mp4"))
    assert len(saved) == 1 and saved[0].name.startswith("good-one-j")
    bad_line = next(line for line in done.stdout.splitlines() if "bad one" in line)
    assert "failed" in bad_line, done.stdout
    assert "gone.mp4" in done.stdout + done.stderr and "404" in done.stdout + done.stderr
