"""Fixtures of the submitter's tests: run ``clipfarm-submit`` as a real process against a real
board, and read the board back through its public API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import RunningBoard

ROOT = Path(__file__).resolve().parents[2]


def run_submit(
    board: RunningBoard, token: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m submitter.cli ARGS`` with the board and token in the environment."""
    env = {"CLIPFARM_BOARD_URL": board.url, "CLIPFARM_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "submitter.cli", *args],
        env={**board.env, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Submitter:
    """A submitter token on a board, and what the board says it owns."""

    def __init__(self, board: RunningBoard, name: str = "alice") -> None:
        self.board = board
        self.name = name
        self.token = board.token("submitter", name)

    def submit(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_submit(self.board, self.token, *args, timeout=timeout)

    def jobs_total(self) -> int:
        with self.board.client(self.token) as c:
            return c.get("/api/v1/jobs", params={"limit": 1}).raise_for_status().json()["total"]

    def stored_bytes(self) -> int:
        """What the board stores for this submitter (media and outputs)."""
        with self.board.admin() as c:
            r = c.get(f"/api/v1/submitters/{self.name}").raise_for_status()
            return r.json()["storage_bytes"]


@pytest.fixture
def alice(board) -> Submitter:
    return Submitter(board)
