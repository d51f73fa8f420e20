"""Running ffmpeg: progress reports, failures with their stderr, cancel kills the whole tree."""

from __future__ import annotations

import os
import threading

import pytest

from timeline.errors import RenderCancelled
from timeline.ffmpeg import FfmpegFailed, run_ffmpeg
from timeline.progress import FfmpegReport, ProgressReader, ProgressTracker


def ffmpeg_pids_with(marker: str) -> list[int]:
    """Pids of live processes whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                found.append(int(entry))
    return found


def test_progress_blocks_are_reported():
    reports: list[FfmpegReport] = []
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=2", "-f", "null",
                "-"], what="test", on_report=reports.append)  # fmt: skip
    assert reports and reports[-1].done
    assert reports[-1].out_time_s == pytest.approx(2.0, abs=0.1)
    assert reports[-1].frame == 50


def test_a_failure_carries_ffmpegs_own_words():
    with pytest.raises(FfmpegFailed) as caught:
        run_ffmpeg(["-i", "/nonexistent/input.mp4", "-f", "null", "-"], what="step 1")
    assert caught.value.message.startswith("step 1: ffmpeg failed")
    assert "No such file" in caught.value.stderr_tail


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to look for processes")
def test_cancel_kills_the_process_tree(tmp_path):
    marker = str(tmp_path / "endless.mp4")
    cancel = threading.Event()
    started = threading.Event()
    outcome: list[BaseException] = []

    def work():
        try:
            run_ffmpeg(["-re", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-y", marker],
                       what="endless", cancel=cancel, on_report=lambda _: started.set(),
                       nice=True)  # fmt: skip
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    assert started.wait(20), "ffmpeg never reported progress"
    assert ffmpeg_pids_with(marker)
    cancel.set()
    thread.join(20)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RenderCancelled)
    assert ffmpeg_pids_with(marker) == []


def test_reader_parses_a_block():
    reader = ProgressReader()
    lines = ["frame=42", "fps=84.5", "out_time_us=1400000", "speed=2.8x", "progress=continue"]
    reports = [reader.feed(line + "\n") for line in lines]
    assert reports[:-1] == [None] * 4
    assert reports[-1] == FfmpegReport(out_time_s=1.4, frame=42, fps=84.5, speed=2.8, done=False)
    assert reader.feed("out_time_us=N/A\n") is None
    assert reader.feed("progress=end\n").out_time_s == 0.0


def test_tracker_weighs_jobs_and_never_goes_back():
    seen = []
    tracker = ProgressTracker(seen.append, min_interval_s=0)
    tracker.add_job("segment 0", 3.0, video=True)
    tracker.add_job("segment 1", 1.0, video=True)
    tracker.add_job("audio", 0.0, length_s=4.0, video=False)
    tracker.report("segment 0", FfmpegReport(1.5, 45, 30.0, 1.0, False))
    assert seen[-1].fraction == pytest.approx(1.5 / 4, abs=1e-3)
    assert seen[-1].out_time_s == pytest.approx(1.5)
    tracker.report("segment 0", FfmpegReport(0.5, 15, 30.0, 1.0, False))  # a late, older block
    assert seen[-1].fraction >= 1.5 / 4 - 1e-3
    tracker.finish("segment 0")
    tracker.finish("segment 1")
    tracker.finish("audio")
    assert seen[-1].fraction == 1.0 and seen[-1].eta_s == 0.0
