"""Uploads from a hostile submitter (issue 21, holes 1 and 3, the board's side): a playlist
naming the board's own files, a tiny picture declaring an enormous size, a burst of uploads.
The board refuses what is not media with a clear 400, keeps nothing of it, probes each new file
once in a small pool of memory-capped processes, and keeps answering everyone meanwhile."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.board.actors import API, Submitter, wait_until
from tests.board.conftest import _start
from tests.board.ffprobe_stand_in import gated_ffprobe, log_lines, most_at_once
from tests.conftest import ENGINES
from tests.harness import RunningBoard
from tests.media import make_local_file_playlist, make_png_declaring, make_solid_clip


def stored_files(board: RunningBoard) -> list[str]:
    """Every file under the board's storage (media, outputs, uploads, temporary files)."""
    root = board.data_dir / "files"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_an_uploaded_hls_playlist_naming_a_local_file_is_refused(shared_board, submitter, tmp_path):
    secret = make_solid_clip(tmp_path / "private" / "holiday.ts")
    playlist = make_local_file_playlist(tmp_path / "clip.mp4", secret)
    before = stored_files(shared_board)
    r = submitter.http.post(
        f"{API}/media", params={"filename": "clip.mp4"}, content=playlist.read_bytes()
    )
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith("clip.mp4: is an HLS playlist (#EXTM3U), not a media file")
    assert "holiday" not in detail and str(secret.parent) not in detail
    assert stored_files(shared_board) == before  # nothing kept, not even in tmp/
    assert submitter.http.get(f"{API}/jobs").status_code == 200


def test_a_16000x16000_png_is_refused_before_anything_decodes_it(shared_board, submitter, tmp_path):
    poster = make_png_declaring(tmp_path / "poster.png", 16000, 16000)  # 0.7 MB
    before = stored_files(shared_board)
    r = submitter.http.post(
        f"{API}/media", params={"filename": "poster.png"}, content=poster.read_bytes()
    )
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(
        "poster.png: its picture is 16000x16000, over the limit of 8192x8192"
    )
    assert stored_files(shared_board) == before


@pytest.fixture(scope="module", params=ENGINES)
def gated_board(request, tmp_path_factory) -> Iterator[tuple[RunningBoard, Path, Path]]:
    """A board whose ffprobe is the stand-in of ``test_probing``: (board, log, gate)."""
    folder = tmp_path_factory.mktemp("gated-ffprobe")
    log, gate = folder / "probes.log", folder / "gate"
    env = {
        "FFPROBE_BINARY": str(gated_ffprobe(folder)),
        "PROBE_LOG": str(log),
        "PROBE_GATE": str(gate),
        "BOARD_PROBE_CONCURRENCY": "2",
        "BOARD_PROBE_MEMORY_MB": "900",
    }
    board = _start(tmp_path_factory, request.param, env)
    yield board, log, gate
    board.close()


def test_the_same_bytes_again_are_recognised_before_any_probe(gated_board, media_dir):
    board, log, _ = gated_board
    who = Submitter(board)
    first = who.upload(media_dir / "a.mp4", expect=201)
    probes = log_lines(log)
    again = who.upload(media_dir / "a.mp4", expect=200)
    assert again["id"] == first["id"]
    assert log_lines(log) == probes  # no ffprobe for bytes it has probed before
    starts = [words for words in probes if words[0] == "start"]
    assert starts and all(int(words[2]) == 900 * 1024 for words in starts)  # memory-capped


def test_a_burst_of_uploads_waits_for_the_probe_pool_and_starves_no_one(
    gated_board, media_dir, tmp_path
):
    """More uploads at once than any default thread pool has threads, their probes held at a
    gate: two probe at a time, the rest wait; meanwhile downloads, reads and health answer."""
    board, log, gate = gated_board
    who = Submitter(board)
    earlier = who.upload(media_dir / "b.mp4")
    pictures = [make_png_declaring(tmp_path / f"p{i}.png", 16 + i, 16) for i in range(34)]
    log.unlink(missing_ok=True)
    gate.touch()

    def upload(picture: Path) -> httpx.Response:
        with board.client(who.token, timeout=120) as http:
            return http.post(
                f"{API}/media", params={"filename": picture.name}, content=picture.read_bytes()
            )

    with concurrent.futures.ThreadPoolExecutor(len(pictures)) as pool:
        try:
            answers = [pool.submit(upload, p) for p in pictures]
            wait_until(lambda: len(log_lines(log)) >= 2, timeout=30, what="two probes started")
            with board.client(who.token, timeout=10) as http:
                health = http.get("/health")
                content = http.get(f"{API}/media/{earlier['id']}/content")
                listing = http.get(f"{API}/jobs")
            assert health.status_code == 200 and listing.status_code == 200
            assert content.status_code == 200, content.text
            assert content.content == (media_dir / "b.mp4").read_bytes()
            assert len(log_lines(log)) == 2  # the other 32 wait for a place in the pool
            assert not any(a.done() for a in answers)
        finally:
            gate.unlink(missing_ok=True)
        statuses = [a.result().status_code for a in answers]
    assert statuses == [201] * len(pictures)
    assert most_at_once(log) == 2
