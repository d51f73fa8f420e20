"""Output uploads cut at random offsets resume where the board stopped and end sha256-verified;
a body tampered with on the way is refused and nothing of it is staged.

Runs: ``CLIPFARM_FAULT_RUNS`` (default 2) seeds, each with several cuts.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import struct
import threading
import time

import httpx
import pytest

from farmhand.client import BoardClient
from tests.board.actors import API, Farmhand, Lease, Submitter, sha256_of
from tests.harness import RunningBoard, wait_for
from tests.reliability.tools import ThrottledProxy, record, storage_files

pytestmark = pytest.mark.slow
RUNS = int(os.environ.get("CLIPFARM_FAULT_RUNS", "2"))
CUTS = 4  # per run


@pytest.fixture(scope="module")
def upload_board(tmp_path_factory):
    board = RunningBoard(tmp_path_factory.mktemp("upload-board"), "sqlite").start()
    yield board
    log = board.log_path.read_text(errors="replace")
    board.close()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def held(upload_board, media_dir) -> Lease:
    """A job claimed by a farmhand of its own (a fresh lane, so tests never share a job)."""
    lane = f"lane-{os.urandom(4).hex()}"
    owner = Submitter(upload_board, lane=lane)
    clip = owner.upload(media_dir / "a.mp4")["id"]
    owner.submit_ok(owner.compilation(clip))
    lease = Farmhand(upload_board, lane=lane).claim_ok()
    lease.owner = owner
    return lease


def status(lease: Lease) -> dict:
    r = lease.upload_status()
    assert r.status_code == 200, r.text
    return r.json()


def send_cut(lease: Lease, data: bytes, start: int, stop: int, *, reset: bool = False) -> None:
    """PUT ``data[start:]`` as the rest of the file but drop the connection after byte ``stop``
    (exclusive), like a farmhand whose network went away: a plain close, or (``reset``) a TCP
    reset that may also throw away bytes still in the board's socket buffer."""
    url = httpx.URL(lease.farmhand.board.url)
    head = [
        f"PUT {API}/farmhand/jobs/{lease.job_id}/output HTTP/1.1",
        f"Host: {url.host}:{url.port}",
        f"Authorization: Bearer {lease.farmhand.token}",
        f"Content-Length: {len(data) - start}",
        f"Content-Range: bytes {start}-{len(data) - 1}/{len(data)}",
        *(f"{k}: {v}" for k, v in lease.upload_headers(data).items()),
    ]
    with socket.create_connection((url.host, url.port)) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        view = memoryview(data)[start:stop]
        for at in range(0, len(view), 64 * 1024):
            sock.sendall(view[at : at + 64 * 1024])
        time.sleep(0.05)
        if reset:  # SO_LINGER 0: close() sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def settled(lease: Lease) -> int:
    """What the board holds once it stopped growing (it may still be writing a cut body)."""
    last = -1
    while (now := status(lease)["received"]) != last:
        last = now
        time.sleep(0.3)
    return now


def put_rest(lease: Lease, data: bytes, start: int, body: bytes | None = None) -> httpx.Response:
    headers = lease.upload_headers(data)
    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    content = data[start:] if body is None else body
    return lease.farmhand.http.put(
        f"{API}/farmhand/jobs/{lease.job_id}/output", content=content, headers=headers
    )


def committed_output(lease: Lease) -> bytes:
    r = lease.owner.http.get(f"{API}/jobs/{lease.job_id}/output")
    assert r.status_code == 200, r.text
    return r.content


@pytest.mark.parametrize("run", range(RUNS))
def test_upload_cut_at_random_offsets_resumes_and_is_verified(upload_board, held, heavy_clips, run):
    rng = random.Random(f"upload-{run}")
    data = heavy_clips[run % len(heavy_clips)].read_bytes()
    offsets = sorted(rng.sample(range(1, len(data) - 1), CUTS))
    received, kept = 0, []
    for i, cut in enumerate(offsets):
        reset = i % 2 == 1
        send_cut(held, data, received, cut, reset=reset)
        if reset:  # the board says how much it kept; never more than was sent, never less
            now = settled(held)  # than before
            assert received <= now <= cut, (received, now, cut)
            received = now
        else:  # a closed line: every byte sent was read, and every byte read is kept
            wait_for(lambda c=cut: status(held)["received"] == c, 10, what=f"{cut} bytes kept")
            received = cut
        kept.append(received)
    r = put_rest(held, data, received)
    assert r.status_code == 200 and r.json() == {"received": len(data), "size": len(data),
                                                 "complete": True}, r.text  # fmt: skip
    assert held.complete(encoder="libx264").status_code == 200
    output = committed_output(held)
    assert sha256_of(output) == sha256_of(data) == held.owner.job(held.job_id)["output"]["sha256"]
    assert storage_files(upload_board, "uploads") == []
    record("upload-cut", run=run, size=len(data), cuts=offsets, kept=kept,
           resumed=len(offsets), verified=True, lost=0)  # fmt: skip


def test_a_body_tampered_with_mid_way_is_refused_and_nothing_is_staged(
    upload_board, held, heavy_clips
):
    data = heavy_clips[0].read_bytes()
    half = len(data) // 2
    send_cut(held, data, 0, half)
    wait_for(lambda: status(held)["received"] == half, 10, what="the first half kept")
    # A resume that declares another file is not glued onto this one: the board starts afresh
    # and says where to resume (0).
    other = data[:-1] + bytes([data[-1] ^ 1])
    headers = held.upload_headers(other)
    headers["Content-Range"] = f"bytes {half}-{len(other) - 1}/{len(other)}"
    r = held.farmhand.http.put(f"{API}/farmhand/jobs/{held.job_id}/output",
                               content=other[half:], headers=headers)  # fmt: skip
    assert r.status_code == 416 and "resume from 0" in r.json()["detail"], r.text
    send_cut(held, data, 0, half)
    wait_for(lambda: status(held)["received"] == half, 10, what="the first half again")
    # The second half arrives with one byte flipped (a bad NIC, a meddling proxy).
    tampered = bytearray(data[half:])
    tampered[len(tampered) // 3] ^= 0x40
    r = put_rest(held, data, half, bytes(tampered))
    assert r.status_code == 400 and "sha256 mismatch" in r.json()["detail"], r.text
    assert status(held) == {"received": 0, "size": None, "complete": False}
    job_files = [f for f in storage_files(upload_board, "outputs") if f.startswith(held.job_id)]
    assert job_files == [] and storage_files(upload_board, "uploads") == []
    r = held.complete()
    assert r.status_code == 409 and "upload it before completing" in r.json()["detail"]
    assert held.owner.http.get(f"{API}/jobs/{held.job_id}/output").status_code == 404
    # The honest file afterwards goes through.
    assert put_rest(held, data, 0).json()["complete"] is True
    assert held.complete().status_code == 200
    assert sha256_of(committed_output(held)) == sha256_of(data)
    record("upload-tamper", refused=True, staged_after_refusal=0)


@pytest.mark.parametrize("run", range(RUNS))
def test_the_farmhands_own_upload_resumes_through_cuts(
    upload_board, held, heavy_clips, tmp_path, run
):
    """``BoardClient.upload_output`` — what a farmhand runs — through a line cut at random
    moments: it asks the board how much arrived and sends only the rest."""
    rng = random.Random(f"client-{run}")
    path = heavy_clips[run % len(heavy_clips)]
    size = path.stat().st_size
    proxy = ThrottledProxy(upload_board.port, up_rate=2_000_000)
    # one cut in the middle half of each third of the body: cuts far enough apart that each
    # lands in its own PUT
    width = (size - size // 10) // (CUTS - 1)
    thresholds = [int(size // 20 + width * (k + rng.uniform(0.25, 0.75))) for k in range(CUTS - 1)]
    stop = threading.Event()

    def cutter() -> None:
        for mark in thresholds:  # sever once `mark` bytes went upstream in all
            while proxy.up < mark and not stop.is_set():
                time.sleep(0.002)
            if stop.is_set():
                return
            proxy.sever()
            time.sleep(0.3)
            proxy.heal()

    puts: list[str] = []

    async def upload() -> None:
        client = BoardClient(proxy.url, held.farmhand.token, name=held.farmhand.name)

        async def note(request: httpx.Request) -> None:
            if request.method == "PUT":
                puts.append(request.headers.get("content-range", ""))

        client.http.event_hooks["request"].append(note)
        try:
            done = await client.upload_output(
                held.job_id, held.token, path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                deadline_s=120,
            )  # fmt: skip
            assert done.complete and done.received == size
        finally:
            await client.aclose()

    thread = threading.Thread(target=cutter, daemon=True)
    thread.start()
    try:
        asyncio.run(upload())
    finally:
        stop.set()
        thread.join()
        cuts = proxy.severed
        proxy.close()
    starts = [int(p.split()[1].split("-")[0]) for p in puts]
    assert cuts == len(thresholds) and len(puts) == cuts + 1, (cuts, puts)
    assert starts == sorted(starts) and starts[-1] > 0, f"a resume went back: {puts}"
    assert held.complete().status_code == 200
    assert sha256_of(committed_output(held)) == sha256_of(path.read_bytes())
    record("upload-client-cut", run=run, size=size, cuts=cuts, puts=puts,
           verified=True, lost=0)  # fmt: skip
