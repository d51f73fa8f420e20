"""What the board writes is private (issue 21, hole 6): the SQLite database and its -wal/-shm,
media, outputs, checksum notes and thumbnails are 0600, their folders 0700, whatever the umask
``board`` was started with."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from board.config import ensure_data_dir, load_config
from tests.board.actors import Farmhand, Submitter
from tests.board.conftest import _start

OPEN_UMASK = 0o022  # what most shells give: files 0644, folders 0755 unless the board says so


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """The test process (and the boards it starts) with the usual permissive umask."""
    before = os.umask(OPEN_UMASK)
    yield
    os.umask(before)


def test_the_database_media_and_outputs_are_this_user_s_only(
    open_umask, tmp_path_factory, media_dir, rendered
):
    board = _start(tmp_path_factory, "sqlite", {})
    try:
        who = Submitter(board)
        clip = who.upload(media_dir / "a.mp4")
        job = who.submit_ok(who.compilation(clip["id"]))
        lease = Farmhand(board).claim_ok()
        thumbnail = lease.farmhand.http.put(
            f"/api/v1/farmhand/jobs/{job['id']}/thumbnail",
            content=(media_dir / "logo.png").read_bytes(),
            headers={"X-Lease-Token": lease.token},
        )
        assert thumbnail.status_code == 204, thumbnail.text
        lease.finish(rendered)
        data = board.data_dir
        database = [data / "board.db", data / "board.db-wal", data / "board.db-shm"]
        assert all(p.exists() for p in database)
        written = [p for p in (data / "files").rglob("*")]
        files = [p for p in written if p.is_file()]
        folders = [data / "files", *(p for p in written if p.is_dir())]
        assert {p.suffix for p in files} >= {"", ".mp4", ".json", ".jpg"}  # media, output, note
        assert {str(p.relative_to(data)): oct(mode(p)) for p in database + files
                if mode(p) != 0o600} == {}  # fmt: skip
        assert {str(p.relative_to(data)): oct(mode(p)) for p in folders if mode(p) != 0o700} == {}
    finally:
        board.close()


def test_a_new_data_folder_is_made_0700(open_umask, tmp_path):
    config = load_config(data_dir=tmp_path / "fresh" / "data")
    assert mode(ensure_data_dir(config)) == 0o700
