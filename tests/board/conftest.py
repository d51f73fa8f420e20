"""Boards for the board's tests.

Starting a board costs a couple of seconds, so most tests share one per engine
(``shared_board``, session-wide) and keep out of each other's way with a lane (a unique
requirement tag, see ``actors``). Tests that need special settings or an empty farm get a board of
their own (``board_with`` at module scope, or the function-scoped ``board_factory``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.board.actors import Farmhand, Submitter, new_lane
from tests.conftest import ENGINES
from tests.harness import RunningBoard, require_pg

# Settings of the shared board: quick retries, quarantine after 3, no GPU grace (a GPU farmhand
# of one test must not hold back the CPU farmhands of the next).
SHARED_ENV = {
    "BOARD_RETRY_BASE_S": "0.4",
    "BOARD_RETRY_MAX_S": "2",
    "BOARD_QUARANTINE_AFTER": "3",
    "BOARD_GPU_GRACE_S": "0",
}


def _start(tmp_path_factory, engine: str, env: dict[str, str]) -> RunningBoard:
    if engine == "postgres":
        require_pg()
    return RunningBoard(tmp_path_factory.mktemp(f"board-{engine}"), engine, env=env).start()


@pytest.fixture(scope="session", params=ENGINES)
def shared_board(request, tmp_path_factory) -> Iterator[RunningBoard]:
    """One board per engine for the whole session (tests keep to their lane)."""
    running = _start(tmp_path_factory, request.param, SHARED_ENV)
    yield running
    running.close()


@pytest.fixture
def lane() -> str:
    return new_lane()


@pytest.fixture
def submitter(shared_board, lane) -> Iterator[Submitter]:
    """A new submitter on the shared board whose jobs carry this test's lane tag."""
    who = Submitter(shared_board, lane=lane)
    yield who
    who.close()


@pytest.fixture
def farmhand_in_lane(shared_board, lane):
    """Make farmhands of this test's lane on the shared board: ``farmhand_in_lane(encoders=…)``."""
    made: list[Farmhand] = []

    def make(**kwargs) -> Farmhand:
        fh = Farmhand(shared_board, lane=lane, **kwargs)
        made.append(fh)
        return fh

    yield make
    for fh in made:
        fh.close()


@pytest.fixture(scope="session")
def rendered(media_dir: Path) -> bytes:
    """The bytes a farmhand "renders": a real 2 s mp4 the board can probe at completion."""
    return (media_dir / "a.mp4").read_bytes()


def board_with(env: dict[str, str]):
    """A module-scoped fixture: a board per engine with ``env``, shared by the module's tests."""

    @pytest.fixture(scope="module", params=ENGINES)
    def fixture(request, tmp_path_factory) -> Iterator[RunningBoard]:
        running = _start(tmp_path_factory, request.param, env)
        yield running
        running.close()

    return fixture
