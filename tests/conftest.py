"""Session-wide fixtures: tiny media generated once, shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.media import make_audio, make_clip, make_image

# The web servers that stand in for the internet in these tests listen on 127.0.0.1, which a
# farmhand refuses to fetch clip URLs from unless its owner allows it: the farmhand processes the
# tests start inherit this, as an owner's LAN media server setting. The network guard's own tests
# (tests/farmhand/test_netguard.py) give their policies explicitly.
os.environ.setdefault("FARMHAND_ALLOW_NETWORKS", "127.0.0.1")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """A folder of tiny real media, generated once per session."""
    root = tmp_path_factory.mktemp("media")
    make_clip(root / "a.mp4", duration=2.0, tone_hz=440)
    make_clip(root / "b.mp4", duration=2.0, tone_hz=660, pattern="smptebars")
    make_clip(root / "intro.mp4", duration=1.0, pattern="rgbtestsrc")
    make_clip(root / "outro.mp4", duration=1.0, pattern="rgbtestsrc")
    make_clip(root / "silent.mp4", duration=1.5, audio=None)
    make_image(root / "logo.png")
    make_audio(root / "music.m4a")
    (root / "not-media.txt").write_text("this is not a video\n")
    return root


# ---------------------------------------------------------------- boards on both engines

ENGINES = ["sqlite", "postgres"]


def _skip_without_pg(engine: str) -> None:
    from tests.harness import require_pg

    if engine == "postgres":
        require_pg()


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    _skip_without_pg(request.param)
    return request.param


@pytest.fixture
def board_factory(tmp_path_factory, engine):
    """Start boards (``board serve`` processes) on ``engine``; all stopped at the end.
    ``board_factory(BOARD_LEASE_S="3", ...)`` sets environment for that board."""
    from tests.harness import RunningBoard

    started: list[RunningBoard] = []

    def make(**env: str) -> RunningBoard:
        running = RunningBoard(tmp_path_factory.mktemp("board"), engine, env=env)
        started.append(running)
        return running.start()

    yield make
    for running in started:
        running.close()


@pytest.fixture
def board(board_factory):
    """A fresh board with default settings."""
    return board_factory()


# ---------------------------------------------------------------- an S3-compatible store


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """The tests' S3-compatible server (moto in server mode, ``tests.s3server``), started once
    per session on 127.0.0.1 like PostgreSQL; its ``board_env()`` makes a board keep its files
    in a new bucket there."""
    from tests.harness import s3_server, stop_s3_server

    yield s3_server(tmp_path_factory.mktemp("s3"))
    stop_s3_server()
