"""Fixtures for the dashboard: real board processes (SQLite), real farmhands, Chromium driven by
Playwright, and helpers to submit jobs through the public API."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

from tests.harness import RunningBoard, RunningFarmhand, missing
from tests.media import make_clip

CHROMIUM = os.environ.get("CLIPFARM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def heavy_clips(tmp_path_factory) -> list[Path]:
    """Two 720p clips whose 'high' quality render takes several seconds on 2 cores."""
    root = tmp_path_factory.mktemp("heavy")
    return [
        make_clip(root / f"h{i}.mp4", width=1280, height=720, duration=3.0, tone_hz=300 + i * 200)
        for i in range(2)
    ]


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="package")
def browser():
    """One headless Chromium for the dashboard tests (Debian's, as CI installs it). Package
    scope: Playwright's sync API keeps an event loop running until it stops, which would break
    the asyncio tests that run after this folder."""
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium)",
                "CLIPFARM_REQUIRE_BROWSER")  # fmt: skip
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


class Farm:
    """Boards and farmhands a test started; all stopped at the end (logs shown on failure)."""

    def __init__(self, tmp_path_factory) -> None:
        self._tmp = tmp_path_factory
        self.boards: list[RunningBoard] = []
        self.hands: list[RunningFarmhand] = []

    def board(self, **env: str) -> RunningBoard:
        running = RunningBoard(self._tmp.mktemp("board"), "sqlite", env=env)
        self.boards.append(running)
        return running.start()

    def farmhand(self, board: RunningBoard, name: str, **env: str) -> RunningFarmhand:
        hand = RunningFarmhand(board, self._tmp.mktemp(f"fh-{name}"), name, env=env)
        self.hands.append(hand)
        return hand.start()

    def logs(self) -> str:
        return "\n".join(
            [f"--- board\n{b.log()}" for b in self.boards]
            + [f"--- farmhand {h.name}\n{h.log()}" for h in self.hands]
        )

    def close(self) -> None:
        for hand in self.hands:
            hand.stop()
        for running in self.boards:
            running.close()


@pytest.fixture
def farm(tmp_path_factory, request):
    made = Farm(tmp_path_factory)
    yield made
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(made.logs())  # shown under "Captured stdout teardown"
    made.close()


@pytest.fixture
def open_dashboard(browser, farm):
    """Open signed-in browser tabs; closed before the farm stops (an open live stream would hold
    the board's graceful shutdown for its full timeout)."""
    from tests.dashboard.browser import Dashboard

    opened: list[Dashboard] = []

    def open_(board: RunningBoard, token: str, **context) -> Dashboard:
        dash = Dashboard(browser, board, token, **context)
        opened.append(dash)
        return dash

    yield open_
    for dash in opened:
        dash.close()


@pytest.fixture(scope="session")
def shared_board(tmp_path_factory):
    """One board for the HTTP-level tests (each makes its own submitters and jobs)."""
    running = RunningBoard(tmp_path_factory.mktemp("shared-board"), "sqlite").start()
    yield running
    running.close()


# ---------------------------------------------------------------- the public API, as scripts use it


def upload(client, path: Path) -> str:
    r = client.post("/api/v1/media", params={"filename": path.name}, content=path.read_bytes())
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def submit(client, title: str, clips: list[str], **extra) -> str:
    """Submit a job of board media ``clips``; ``extra`` goes into the body (priority, …) or, for
    ``output``/``transitions``/``intro``/``outro``, into the compilation."""
    compilation = {"title": title, "clips": [{"media": c} for c in clips]}
    compilation["output"] = extra.pop("output", {"width": 320, "height": 180, "fps": 30})
    for key in ("transitions", "intro", "outro"):
        if key in extra:
            compilation[key] = extra.pop(key)
    r = client.post("/api/v1/jobs", json={"compilation": compilation, **extra})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def job(client, job_id: str) -> dict:
    r = client.get(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def farmhand_view(admin, name: str) -> dict | None:
    return next((f for f in admin.get("/api/v1/farmhands").json() if f["name"] == name), None)


def say_hello(board: RunningBoard, name: str | None = None, token: str | None = None) -> str:
    """Register a farmhand the way one does at start (``POST /api/v1/farmhand/status``), without
    running one: for tests that only need a row on the farmhands page."""
    name = name or f"pc-{secrets.token_hex(2)}"
    token = token or board.token("farmhand", f"fh-{name}")
    caps = {"encoders": ["libx264"], "cores": os.cpu_count() or 1, "slots": 1}
    with board.client(token) as c:
        r = c.post("/api/v1/farmhand/status", json={"farmhand": name, "capabilities": caps})
        assert r.status_code == 200, r.text
    return name
