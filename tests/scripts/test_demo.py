"""scripts/demo, run the way a newcomer runs it: it sets up, starts a board and two farmhands,
renders three compilations, verifies them, and stops everything it started."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import ffprobe, wait_for
from tests.scripts.conftest import ROOT

pytestmark = pytest.mark.slow


class DemoRun:
    """``scripts/demo ARGS`` in its own process group (as in a terminal), output read live."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BOARD_", "FARMHAND_"))}
        self.proc = subprocess.Popen(
            [str(ROOT / "scripts" / "demo"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # scripts/setup runs as on a fresh machine, except that it must not reinstall the
            # venv this very test suite runs from (scripts/test set it up just before)
            env={**env, "PYTHONUNBUFFERED": "1", "CLIPFARM_SETUP_NO_INSTALL": "1"},
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match:
        """The first line (from now on or seen before) matching ``pattern``."""
        for line in self.lines:
            if found := re.search(pattern, line):
                return found
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.output())

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    def output(self) -> str:
        return "\n".join(self.lines)


def board_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stopped_cleanly(folder: Path) -> None:
    logs = folder / "logs"
    for name in ("demo-pc-1", "demo-pc-2"):
        assert f"farmhand {name} stopped" in (logs / f"{name}.log").read_text(), name


def test_demo_ends_with_playable_compilations_and_a_working_dashboard_url(tmp_path):
    folder = tmp_path / "demo"
    demo = DemoRun("--exit-when-done", "--dir", str(folder))
    url = demo.wait_for_line(r"dashboard: (http://127\.0\.0\.1:\d+/)$", 180).group(1)
    token = demo.wait_for_line(r"admin token: (cf_\S+)$", 5).group(1)
    # while the demo runs, its URL is a live board and the printed token signs in as admin
    assert board_answers(url)
    farm = httpx.get(f"{url}api/v1/farmhands", headers={"Authorization": f"Bearer {token}"})
    assert farm.status_code == 200, farm.text
    assert httpx.get(f"{url}api/v1/farmhands").status_code == 401
    # ...and the dashboard: sign in with it as a person would, land on the overview
    with httpx.Client(base_url=url) as browser:
        r = browser.post("/signin", data={"token": token, "next": "/farmhands"})
        assert r.status_code == 303 and r.headers["location"] == "/farmhands", r.text
        page = browser.get("/farmhands")
        assert page.status_code == 200 and ">admin<" in page.text
        # the two farmhands call in while the first compilation renders
        wait_for(lambda: all(f'id="fh-demo-pc-{n}"' in browser.get("/farmhands").text
                             for n in (1, 2)), 60, what="both farmhands on the page")  # fmt: skip

    assert demo.finish(timeout=300) == 0, demo.output()
    videos = sorted((folder / "outputs").glob("*.mp4"))
    assert len(videos) == 3, demo.output()
    for video in videos:
        assert f"ok  {video}" in demo.output()
        info = ffprobe(video)
        streams = {s["codec_type"]: s for s in info["streams"]}
        assert streams["video"]["codec_name"] == "h264"
        assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
        assert streams["audio"]["codec_name"] == "aac"
        assert float(info["format"]["duration"]) > 5
    assert "3 new, 0 existing, 0 rejected" in demo.output()
    assert f"dashboard        {url}" in demo.output()
    # --exit-when-done stops what it started: the board is gone, the farmhands said goodbye
    assert not board_answers(url)
    stopped_cleanly(folder)


def test_ctrl_c_mid_render_stops_the_farm_cleanly(tmp_path):
    folder = tmp_path / "demo"
    demo = DemoRun("--dir", str(folder))
    url = demo.wait_for_line(r"dashboard: (http://127\.0\.0\.1:\d+/)$", 180).group(1)
    demo.wait_for_line(r": (fetching|rendering) on demo-pc-\d", 180)
    os.killpg(demo.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert demo.finish(timeout=120) == 130, demo.output()
    assert "[demo] farm stopped" in demo.output()
    assert not board_answers(url)
    stopped_cleanly(folder)
