"""Hostile clients against a working board (issue 21, holes 1, 3 and 4): while a submitter and a
farmhand go through an ordinary job, attackers at the same time hold slowloris connections,
upload pictures declaring 16000x16000 pixels and HLS playlists naming files on the board's disk,
and post bodies nested 100,000 deep.

Checked: every attack gets its refusal (a slowloris is closed within the request-head timeout,
every upload and every deep body is a 400, never a 5xx); the ordinary work goes through (the job
succeeds, every read of /health and of the job list meanwhile answers 200); nothing of the
attacks stays in storage; no traceback in the board's log. Measured: how long each slowloris
lasted, the latency of the ordinary reads, the board's memory (its process, and with the probe
processes it starts). Runs: ``CLIPFARM_FAULT_RUNS`` (default 1).
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import struct
import threading
import time
import zlib

import psutil
import pytest

from tests.board.actors import API, Farmhand, Submitter
from tests.harness import RunningBoard
from tests.media import make_local_file_playlist, make_png_declaring, make_solid_clip
from tests.reliability.tools import record, storage_files

pytestmark = pytest.mark.slow
RUNS = int(os.environ.get("CLIPFARM_FAULT_RUNS", "1"))
HEAD_TIMEOUT_S = 3
SLOWLORIS = 40
HOSTILE_UPLOADS = 24  # half pictures, half playlists
UPLOADERS = 4
DEEP_BODIES = 30


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> bytes:
    return make_png_declaring(
        tmp_path_factory.mktemp("huge") / "poster.png", 16000, 16000
    ).read_bytes()


def with_comment(png: bytes, text: bytes) -> bytes:
    """The same picture with a tEXt chunk before IEND: other bytes (another sha256), the same
    declared size."""
    body = b"Comment\0" + text
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
    return png[:-12] + chunk + png[-12:]


class TreeMemory:
    """Peak resident memory of the board's process alone and with its children (the probe
    processes and their ffprobe), sampled every 20 ms while the ``with`` block runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.process.memory_info().rss
        self.peak = self.peak_tree = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = self.process.memory_info().rss
            tree = rss
            for child in self.process.children(recursive=True):
                try:
                    tree += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak, self.peak_tree = max(self.peak, rss), max(self.peak_tree, tree)
            time.sleep(0.02)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def slowloris(board: RunningBoard, lasted: list[float]) -> None:
    """A header line every second until the board closes the connection."""
    sock = socket.create_connection(("127.0.0.1", board.port))
    sock.settimeout(1.0)
    started = time.monotonic()
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: board\r\n")
        for line in range(60):
            try:
                if sock.recv(65536) == b"":
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                break
            try:
                sock.sendall(f"X-Slow-{line}: still here\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                break
        lasted.append(time.monotonic() - started)
    finally:
        sock.close()


@pytest.mark.parametrize("run", range(RUNS))
def test_hostile_clients_get_their_refusals_while_ordinary_work_goes_on(
    run, tmp_path, media_dir, huge_png
):
    (tmp_path / "board").mkdir()
    board = RunningBoard(tmp_path / "board", env={"BOARD_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S)})
    board.start()
    secret = make_solid_clip(tmp_path / "private" / "secret.ts")
    hostile: list[tuple[str, bytes]] = []
    for i in range(HOSTILE_UPLOADS // 2):
        hostile.append((f"poster{i}.png", with_comment(huge_png, secrets.token_bytes(8))))
        playlist = make_local_file_playlist(tmp_path / f"clip{i}.mp4", secret)
        hostile.append((f"clip{i}.mp4", playlist.read_bytes() + f"# {i}\n".encode()))
    alice, mallory = Submitter(board, name="alice"), Submitter(board, name="mallory")
    fh = Farmhand(board)
    clip = alice.upload(media_dir / "a.mp4")
    answers: list[tuple[str, int, str]] = []
    deep: list[int] = []
    lasted: list[float] = []
    reads: list[tuple[int, float]] = []
    stop = threading.Event()

    def upload(share: list[tuple[str, bytes]]) -> None:
        with board.client(mallory.token, timeout=120) as http:
            for name, data in share:
                r = http.post(f"{API}/media", params={"filename": name}, content=data)
                answers.append((name, r.status_code, r.json().get("detail", "")))

    def nest() -> None:
        body = b"[" * 100_000
        with board.client(mallory.token, timeout=60) as sub, board.client(fh.token) as farm:
            for i in range(DEEP_BODIES):
                http, route = [(sub, f"{API}/jobs"), (farm, f"{API}/farmhand/claim"),
                               (farm, f"{API}/farmhand/jobs/j-x/heartbeat")][i % 3]  # fmt: skip
                r = http.post(route, content=body, headers={"content-type": "application/json"})
                deep.append(r.status_code)

    def read_meanwhile() -> None:
        with board.client(alice.token, timeout=30) as http:
            while not stop.is_set():
                for route in ("/health", f"{API}/jobs"):
                    started = time.monotonic()
                    status = http.get(route).status_code
                    reads.append((status, time.monotonic() - started))
                time.sleep(0.1)

    attackers = [threading.Thread(target=slowloris, args=(board, lasted)) for _ in range(SLOWLORIS)]
    attackers += [threading.Thread(target=upload, args=(hostile[i::UPLOADERS],))
                  for i in range(UPLOADERS)]  # fmt: skip
    attackers.append(threading.Thread(target=nest))
    reader = threading.Thread(target=read_meanwhile)
    with TreeMemory(board.proc.pid) as memory:
        reader.start()
        for thread in attackers:
            thread.start()
        job = alice.submit_ok(alice.compilation(clip["id"]))  # the ordinary work, meanwhile
        lease = fh.claim_ok(wait_s=5)
        lease.finish((media_dir / "a.mp4").read_bytes())  # what the farmhand "rendered"
        for thread in attackers:
            thread.join(180)
        stop.set()
        reader.join(30)

    log = board.log_path.read_text(errors="replace")
    leftovers = {folder: storage_files(board, folder) for folder in ("tmp", "uploads")}
    media_kept = storage_files(board, "media")
    done = alice.job(job["id"])
    for who in (alice, mallory, fh):
        who.close()
    board.close()

    latencies = sorted(s for _, s in reads)
    record(
        "hostile-clients",
        run=run,
        slowloris=len(lasted),
        slowloris_lasted_s=[round(min(lasted), 2), round(max(lasted), 2)],
        hostile_uploads=len(answers),
        upload_statuses=sorted({code for _, code, _ in answers}),
        deep_bodies=len(deep),
        deep_statuses=sorted(set(deep)),
        ordinary_reads=len(reads),
        read_statuses=sorted({code for code, _ in reads}),
        read_latency_ms={
            "p50": round(statistics.median(latencies) * 1000, 1),
            "p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            "max": round(latencies[-1] * 1000, 1),
        },
        board_rss_mb={
            "before": round(memory.before / 2**20, 1),
            "peak": round(memory.peak / 2**20, 1),
            "peak_with_probes": round(memory.peak_tree / 2**20, 1),
        },
        job=done["state"],
    )
    assert len(lasted) == SLOWLORIS and max(lasted) < HEAD_TIMEOUT_S + 5
    assert len(answers) == HOSTILE_UPLOADS
    for name, code, detail in answers:
        assert code == 400, (name, code, detail)
        assert ("16000x16000" in detail) if name.endswith(".png") else ("HLS playlist" in detail)
        assert "secret" not in detail
    assert deep == [400] * DEEP_BODIES
    assert reads and {code for code, _ in reads} == {200}
    assert done["state"] == "succeeded"
    assert leftovers == {"tmp": [], "uploads": []}
    assert len(media_kept) == 1  # alice's clip, nothing of mallory's
    assert "Traceback" not in log, log[-3000:]
