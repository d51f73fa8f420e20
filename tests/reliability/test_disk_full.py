"""The board's disk fills up: uploads are refused with a clear 507, nothing half-written stays,
the database stays consistent, and the job is not lost — it goes through once space is back.

The board's storage folder (``BOARD_DATA_DIR/files``) is a small tmpfs mounted by the test (it
runs as root in CI); where mounting is not permitted the tests skip and say why. The database
stays on the ordinary disk: this is the media/outputs volume filling up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.board.actors import API, Farmhand, Submitter, sha256_of
from tests.e2e.test_farm import wait_state
from tests.harness import RunningBoard, RunningFarmhand, wait_for
from tests.reliability.tools import record, storage_files

pytestmark = pytest.mark.slow
TMPFS_MB = 8


def mount_tmpfs(where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {TMPFS_MB} MB tmpfs here (needs root and CAP_SYS_ADMIN): "
                    f"{done.stderr.strip() or done.returncode}")  # fmt: skip


class Disk:
    """The tmpfs under the board's storage: fill it to the last byte, free it again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> int:
        written = 0
        block = b"\0" * 65536
        with open(self.filler, "ab") as f:
            with contextlib.suppress(OSError):
                while True:
                    written += os.write(f.fileno(), block)
            for size in (4096, 512, 1):  # the last pages
                with contextlib.suppress(OSError):
                    while True:
                        written += os.write(f.fileno(), b"\0" * size)
        probe = self.root / "probe"
        try:
            probe.write_bytes(b"x")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        else:
            raise AssertionError("the disk still takes bytes")
        return written

    def release(self, nbytes: int) -> None:
        """Give ``nbytes`` back (the filler shrinks): room for part of an upload."""
        (self.root / "probe").unlink(missing_ok=True)
        os.truncate(self.filler, max(0, self.filler.stat().st_size - nbytes))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        (self.root / "probe").unlink(missing_ok=True)


@pytest.fixture
def full_board(tmp_path_factory):
    data = tmp_path_factory.mktemp("full-board")
    files = data / "files"
    mount_tmpfs(files)
    board, log = None, ""
    try:
        board = RunningBoard(data, "sqlite", env={"BOARD_JANITOR_INTERVAL_S": "1"}).start()
        yield board, Disk(files)
    finally:
        if board is not None:
            log = board.log_path.read_text(errors="replace")
            board.close()
        subprocess.run(["umount", "-l", str(files)], check=False)
    assert "Traceback" not in log, log[-4000:]


def consistent(board: RunningBoard, admin) -> None:
    """No job left claimed or running without a live farmhand, every succeeded job's output
    file present with the size the database says."""
    page = admin.get(f"{API}/jobs", params={"limit": 500}).json()["items"]
    for job in page:
        if job["state"] == "succeeded":
            r = admin.get(f"{API}/jobs/{job['id']}/output")
            assert r.status_code == 200 and len(r.content) == job["output"]["size"]
            assert sha256_of(r.content) == job["output"]["sha256"]
    assert storage_files(board, "tmp") == []


def test_a_full_disk_refuses_uploads_cleanly_and_the_upload_goes_through_later(
    full_board, media_dir
):
    board, disk = full_board
    alice = Submitter(board)
    clip = alice.upload(media_dir / "a.mp4")["id"]
    job = alice.submit_ok(alice.compilation(clip))["id"]
    lease = Farmhand(board).claim_ok()
    output = (media_dir / "b.mp4").read_bytes()
    media_before = storage_files(board, "media")
    with board.admin() as admin:
        used_before = admin.get(f"{API}/submitters/{alice.name}").json()["storage_bytes"]
    filled = disk.fill()

    # A media upload: 507 that says what is wrong; no file, no row.
    r = alice.http.post(f"{API}/media", params={"filename": "c.mp4"},
                        content=(media_dir / "intro.mp4").read_bytes())  # fmt: skip
    assert r.status_code == 507 and "disk is full" in r.json()["detail"], r.text
    assert storage_files(board, "media") == media_before
    with board.admin() as admin:
        assert admin.get(f"{API}/submitters/{alice.name}").json()["storage_bytes"] == used_before
    # An output upload: the same, from its first byte; and a thumbnail.
    r = lease.upload(output)
    assert r.status_code == 507 and "disk is full" in r.json()["detail"], r.text
    r = lease.farmhand.http.put(f"{API}/farmhand/jobs/{job}/thumbnail",
                                headers={"X-Lease-Token": lease.token},
                                content=b"\xff\xd8\xff" + bytes(20_000))  # fmt: skip
    assert r.status_code == 507, r.text
    assert lease.upload_status().json()["received"] == 0
    # Room for half of it: the disk fills mid-body. What fitted is kept for the resume; nothing
    # is committed, completing is refused, the job is still the farmhand's.
    disk.release(len(output) // 2)
    r = lease.upload(output)
    assert r.status_code == 507 and "disk is full" in r.json()["detail"], r.text
    held = lease.upload_status().json()
    assert held["complete"] is False and 0 < held["received"] < len(output), held
    assert lease.complete().status_code == 409
    assert alice.job(job)["state"] in ("claimed", "running")
    assert lease.heartbeat(0.97, stage="uploading").status_code == 200

    disk.free()
    r = lease.upload(output, start=held["received"])
    assert r.status_code == 200 and r.json()["complete"], r.text
    assert lease.complete().status_code == 200
    with board.admin() as admin:
        consistent(board, admin)
    got = alice.http.get(f"{API}/jobs/{job}/output")
    assert got.status_code == 200 and got.content == output
    record("disk-full-protocol", tmpfs_mb=TMPFS_MB, filled_bytes=filled,
           refused=["media 507", "output 507 at byte 0", "output 507 mid-body",
                    "thumbnail 507"], resumed_from=held["received"], lost=0)  # fmt: skip


@pytest.mark.parametrize("run", range(int(os.environ.get("CLIPFARM_FAULT_RUNS", "1"))))
def test_a_farmhand_rides_out_a_full_board_disk(full_board, media_dir, tmp_path, run):
    """A real farmhand renders, finds the board's disk full at upload, keeps its lease and keeps
    trying; once space is freed its upload goes through and the job succeeds once."""
    board, disk = full_board
    alice = Submitter(board)
    clips = [alice.upload(media_dir / n)["id"] for n in ("a.mp4", "b.mp4")]
    job = alice.submit_ok(alice.compilation(*clips, output={"width": 320, "height": 180}))["id"]
    disk.fill()
    hand = RunningFarmhand(board, tmp_path / "fh", "steady").start()
    try:
        wait_for(lambda: alice.job(job)["stage"] == "uploading", 120, what="the upload to start")
        time.sleep(4)  # several refused tries (507) while the disk stays full
        during = alice.job(job)
        assert during["state"] == "running" and during["stage"] == "uploading", during
        assert during["attempts"] == 1
        assert alice.http.get(f"{API}/jobs/{job}/output").status_code == 404
        disk.free()
        done = wait_state(alice.http, job, "succeeded", "failed", timeout=60)
        assert done["state"] == "succeeded" and done["attempts"] == 1, done
        assert hand.proc.poll() is None
    finally:
        hand.stop()
    history = alice.history(job)
    assert [a["outcome"] for a in history["attempts"]] == ["succeeded"]
    with board.admin() as admin:
        consistent(board, admin)
    wait_for(lambda: storage_files(board, "uploads") == [], 10, what="the janitor")
    committed = [f for f in storage_files(board, "outputs") if f.startswith(job)]
    assert len([f for f in committed if f.endswith(".mp4")]) == 1, committed
    record("disk-full-farmhand", run=run, tmpfs_mb=TMPFS_MB, full_for_s=4, attempts=done["attempts"],
           outcome=done["state"], lost=0, doubled=0)  # fmt: skip
