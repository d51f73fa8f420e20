"""Driving the dashboard in Chromium: sign in through the form, watch rows, prove no reload."""

from __future__ import annotations

from playwright.sync_api import Browser, Page

from tests.dashboard.conftest import LAPTOP
from tests.harness import RunningBoard


class Dashboard:
    """One signed-in browser tab on a board."""

    def __init__(self, browser: Browser, board: RunningBoard, token: str, **context) -> None:
        self.board = board
        self.context = browser.new_context(viewport=context.pop("viewport", LAPTOP), **context)
        self.page: Page = self.context.new_page()
        self.dialogs: list[str] = []  # any alert()/confirm() a page opens: none is expected
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.set_default_timeout(20_000)
        self.sign_in(token)

    def sign_in(self, token: str) -> None:
        self.page.goto(f"{self.board.url}/")
        assert "/signin" in self.page.url  # no session yet: sent to sign in, not a JSON 401
        self.page.fill("#token", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"{self.board.url}/")

    def open(self, path: str) -> Page:
        self.page.goto(f"{self.board.url}{path}")
        self.wait_live()
        self.page.evaluate("window.__sameDocument = true")
        return self.page

    def wait_live(self, timeout: float = 20_000) -> None:
        self.page.wait_for_selector('#live[data-state="live"]', timeout=timeout)

    def not_reloaded(self) -> bool:
        """True while the page is the document ``open`` loaded (a reload drops the marker)."""
        return self.page.evaluate("window.__sameDocument === true")

    def row(self, job_id: str):
        return self.page.locator(f"#job-{job_id}")

    def bar_value(self, job_id: str) -> int:
        return int(self.row(job_id).get_by_role("progressbar").get_attribute("aria-valuenow"))

    def close(self) -> None:
        self.context.close()
