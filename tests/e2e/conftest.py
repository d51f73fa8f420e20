"""Fixtures for farm end-to-end tests: a board process, farmhand processes, media that takes a
few seconds to render (so tests can act mid-render), and a plain web server for URL clips."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from tests.harness import RunningBoard, RunningFarmhand
from tests.media import make_clip


@pytest.fixture(scope="session")
def heavy_clips(tmp_path_factory) -> list[Path]:
    """Two 720p clips whose 'high' quality render takes several seconds on 2 cores."""
    root = tmp_path_factory.mktemp("heavy")
    return [
        make_clip(root / f"h{i}.mp4", width=1280, height=720, duration=3.0, tone_hz=300 + i * 200)
        for i in range(2)
    ]


@pytest.fixture(scope="session")
def web_server(media_dir, tmp_path_factory):
    """A plain HTTP server (threaded) serving a folder: clips for yt-dlp to fetch by URL."""
    root = tmp_path_factory.mktemp("www")
    shutil.copy(media_dir / "b.mp4", root / "web-clip.mp4")
    (root / "page.html").write_text("<html><body>no video here</body></html>")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        return


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def farm(tmp_path_factory, request):
    """Make boards and farmhands; everything is stopped at the end (logs shown on failure)."""
    boards: list[RunningBoard] = []
    hands: list[RunningFarmhand] = []

    class Farm:
        def board(self, engine: str = "sqlite", **env: str) -> RunningBoard:
            running = RunningBoard(tmp_path_factory.mktemp("board"), engine, env=env)
            boards.append(running)
            return running.start()

        def farmhand(self, board: RunningBoard, name: str, **env: str) -> RunningFarmhand:
            hand = RunningFarmhand(board, tmp_path_factory.mktemp(f"fh-{name}"), name, env=env)
            hands.append(hand)
            return hand.start()

        def logs(self) -> str:
            return "\n".join(
                [f"--- board\n{b.log()}" for b in boards]
                + [f"--- farmhand {h.name}\n{h.log()}" for h in hands]
            )

    made = Farm()
    yield made
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(made.logs())  # shown under "Captured stdout teardown"
    for hand in hands:
        hand.stop()
    for running in boards:
        running.close()
