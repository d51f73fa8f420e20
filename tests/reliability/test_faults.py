"""Faults injected into a real farm: nothing lost, nothing doubled, nothing half-visible.

Each test can be run longer by hand: ``CLIPFARM_FAULT_RUNS=7 .venv/bin/python -m pytest
tests/reliability/test_faults.py`` (each run of the kill relay is three kills: during the fetch,
the render and the upload). ``CLIPFARM_RELIABILITY_LOG=figures.jsonl`` keeps what each run did.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_farm import _alive, ffprobe, job, upload, wait_state
from tests.harness import ffmpeg_children_of, wait_for
from tests.reliability.tools import ThrottledProxy, record, storage_files

pytestmark = pytest.mark.slow
RUNS = int(os.environ.get("CLIPFARM_FAULT_RUNS", "1"))
STAGES = ("fetching", "rendering", "uploading")
DOWN_RATE = 3_000_000  # bytes/s from the board to a doomed farmhand: a fetch takes ~2 s
UP_RATE = 300_000  # and back: the upload of a ~0.5 MB render takes ~1.5 s


def fault_job(client, heavy_clips, *, max_attempts: int = 10) -> str:
    """Two 720p clips (5.7 MB to fetch) rendered to 640×360: a few seconds of ffmpeg, ~0.5 MB
    of output."""
    ids = [upload(client, p) for p in heavy_clips]
    body = {
        "max_attempts": max_attempts,
        "compilation": {
            "title": "fault",
            "clips": [{"media": i} for i in ids],
            "output": {"width": 640, "height": 360, "fps": 30, "quality": "standard"},
            "transitions": {"effect": "fade", "duration": 0.5},
        },
    }
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def ffmpeg_of(root: Path) -> list[int]:
    """Every ffmpeg on the machine working on files of the farmhand under ``root`` (children or
    orphans alike)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if "ffmpeg" in (proc.info["name"] or "") and str(root) in " ".join(
                proc.info["cmdline"] or []
            ):
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


def part_progress(board, job_id: str) -> tuple[int, int]:
    """(bytes the board holds, declared size) of the output upload in progress for a job."""
    import json

    for part in sorted((board.data_dir / "files" / "uploads").glob(f"{job_id}.*.part")):
        try:
            declared = json.loads(Path(f"{part}.json").read_text())["size"]
            return part.stat().st_size, declared
        except (OSError, ValueError, KeyError):
            continue
    return 0, 0


def kill_at(stage: str, hand, board, job_id: str, proxy, rng: random.Random, media_bytes: int):
    """Wait until ``hand`` is at a random point of ``stage`` of the job, kill -9 it there, and
    say what it was doing at that instant."""
    if stage == "fetching":
        goal = int(media_bytes * rng.uniform(0.1, 0.9))
        wait_for(lambda: proxy.down >= goal, 90, interval=0.005, what="the fetch")
        evidence = {"fetched_bytes": proxy.down, "of": media_bytes}
    elif stage == "rendering":
        delay = rng.uniform(0.1, 0.8)  # a render here takes 2 s on an idle machine
        started = wait_for(lambda: ffmpeg_of(hand.root) and time.monotonic(), 90,
                           interval=0.01, what="the render")  # fmt: skip
        time.sleep(max(0.0, started + delay - time.monotonic()))
        evidence = {"rendering_for_s": round(delay, 2)}
    else:
        frac = rng.uniform(0.1, 0.9)
        wait_for(lambda: (p := part_progress(board, job_id))[1] and p[0] >= frac * p[1], 120,
                 interval=0.005, what="the upload")  # fmt: skip
        held, declared = part_progress(board, job_id)
        evidence = {"uploaded_bytes": held, "of": declared}
    # What it was really doing when the signal went: the facts, not the plan.
    renders = ffmpeg_of(hand.root)
    rendered = any(p.is_file() for p in (hand.root / "state" / "work").rglob("*"))
    held, _ = part_progress(board, job_id)
    children = ffmpeg_children_of(hand.proc.pid)
    hand.signal(signal.SIGKILL)
    hand.wait(10)
    actual = "uploading" if held else "rendering" if renders or rendered else "fetching"
    assert actual == stage, (stage, actual, evidence)
    wait_for(lambda: not any(_alive(p) for p in children + renders) and not ffmpeg_of(hand.root),
             10, what="its ffmpeg to exit with it")  # fmt: skip
    return {"stage": actual, **evidence}


@pytest.mark.parametrize("run", range(RUNS))
def test_kill_9_at_random_points_of_fetch_render_and_upload_loses_nothing(farm, heavy_clips, run):
    """A relay: one farmhand after another is killed -9 at a random point of the fetch, of the
    render, of the upload; a last one finishes. The job succeeds exactly once, nothing of the
    dead attempts is ever visible or left behind, no ffmpeg outlives its farmhand."""
    rng = random.Random(f"kill-{run}")
    board = farm.board(BOARD_LEASE_S="3", BOARD_HEARTBEAT_S="1", BOARD_JANITOR_INTERVAL_S="1")
    alice = board.client(board.token("submitter", "alice"))
    job_id = fault_job(alice, heavy_clips)
    media_bytes = sum(p.stat().st_size for p in heavy_clips)
    proxy = ThrottledProxy(board.port, up_rate=UP_RATE, down_rate=DOWN_RATE)
    kills = []
    try:
        for number, stage in enumerate(STAGES):
            doomed = farm.farmhand(board, f"doomed{run}-{number}", FARMHAND_BOARD_URL=proxy.url)
            kills.append(kill_at(stage, doomed, board, job_id, proxy, rng, media_bytes))
            assert alice.get(f"/api/v1/jobs/{job_id}/output").status_code == 404
            assert job(alice, job_id)["state"] != "succeeded"
    finally:
        proxy.close()
    rescuer = farm.farmhand(board, f"rescuer{run}")
    done = wait_state(alice, job_id, "succeeded", "failed", timeout=180)
    assert done["state"] == "succeeded", (kills, done["error"])
    assert done["farmhand"] == rescuer.name
    history = alice.get(f"/api/v1/jobs/{job_id}/history").json()
    assert [a["outcome"] for a in history["attempts"]] == ["lost"] * len(STAGES) + ["succeeded"]
    assert [e["to_state"] for e in history["events"]].count("succeeded") == 1
    # The output route serves the finished, verified file and nothing else; the janitor leaves
    # exactly that file (with its checksum note and thumbnail) in the board's storage.
    served = alice.get(f"/api/v1/jobs/{job_id}/output")
    assert served.status_code == 200 and len(served.content) == done["output"]["size"]
    assert hashlib.sha256(served.content).hexdigest() == done["output"]["sha256"]
    local = board.data_dir / "served.mp4"
    local.write_bytes(served.content)
    assert float(ffprobe(local)["format"]["duration"]) > 5
    wait_for(lambda: storage_files(board, "uploads") == [], 15, what="the janitor")
    left = sorted(f for f in storage_files(board, "outputs") if f.startswith(job_id))
    assert [f.rsplit(".", 1)[-1] for f in left if not f.endswith(".json")] in (
        ["jpg", "mp4"],
        ["mp4"],
    ), left
    assert len(left) <= 3 and storage_files(board, "tmp") == []
    record("kill-9", run=run, kills=kills, state=done["state"], attempts=done["attempts"],
           succeeded_events=1, outputs=1, stray_files=0, orphaned_ffmpeg=0, lost=0)  # fmt: skip


@pytest.mark.parametrize("run", range(RUNS))
def test_board_killed_mid_render_mid_upload_and_after_success_loses_nothing(
    farm, heavy_clips, engine, run
):
    """The board is killed -9 three times while a farmhand works: during the render, during the
    upload (which then resumes from what the board kept) and right after it acknowledged the
    completion. The farmhand rides it out; nothing is lost, nothing is done twice."""
    board = farm.board(engine, BOARD_JANITOR_INTERVAL_S="1")
    alice = board.client(board.token("submitter", "alice"))
    job_id = fault_job(alice, heavy_clips)
    proxy = ThrottledProxy(board.port, up_rate=UP_RATE, down_rate=50_000_000)
    try:
        hand = farm.farmhand(board, "steady", FARMHAND_BOARD_URL=proxy.url)
        wait_for(lambda: ffmpeg_of(hand.root), 90, interval=0.01, what="the render")
        board.kill()
        time.sleep(2)  # heartbeats fail meanwhile; the render goes on
        # nothing was thrown away: ffmpeg still runs, or its result waits in the work folder
        work = hand.root / "state" / "work"
        assert ffmpeg_of(hand.root) or any(p.is_file() for p in work.rglob("*"))
        board.start()
        frac = random.Random(f"restart-{engine}-{run}").uniform(0.1, 0.9)
        wait_for(lambda: (p := part_progress(board, job_id))[1] and p[0] >= frac * p[1], 120,
                 interval=0.005, what="the upload")  # fmt: skip
        kept_before_kill, declared = part_progress(board, job_id)
        board.kill()
        time.sleep(1)
        board.start()
        done = wait_state(alice, job_id, "succeeded", "failed", timeout=120)
        assert done["state"] == "succeeded", done["error"]
        assert done["farmhand"] == "steady" and done["attempts"] == 1
        puts = [(req, status) for _, req, status in proxy.exchanges if req.startswith("PUT")]
    finally:
        proxy.close()
    board.kill()  # right after the acknowledgement: what was acknowledged must be durable
    board.start()
    after = job(alice, job_id)
    assert after["state"] == "succeeded" and after["output"] == done["output"]
    served = alice.get(f"/api/v1/jobs/{job_id}/output")
    assert served.status_code == 200 and len(served.content) == done["output"]["size"]
    assert hand.proc.poll() is None
    history = alice.get(f"/api/v1/jobs/{job_id}/history").json()
    assert [a["outcome"] for a in history["attempts"]] == ["succeeded"]
    record("board-restart", engine=engine, run=run, kills=3, upload_kept_at_kill=kept_before_kill,
           upload_size=declared, output_puts=len(puts), attempts=done["attempts"],
           lost=0, doubled=0)  # fmt: skip


@pytest.mark.parametrize("run", range(RUNS))
def test_network_cut_mid_upload_longer_than_the_lease_reruns_elsewhere_and_the_zombie_is_refused(
    farm, heavy_clips, run
):
    board = farm.board(BOARD_LEASE_S="4", BOARD_HEARTBEAT_S="1", BOARD_JANITOR_INTERVAL_S="1")
    alice = board.client(board.token("submitter", "alice"))
    job_id = fault_job(alice, heavy_clips)
    proxy = ThrottledProxy(board.port, up_rate=UP_RATE, down_rate=50_000_000)
    try:
        cut_off = farm.farmhand(board, "cut-off", FARMHAND_BOARD_URL=proxy.url)
        frac = random.Random(f"cut-{run}").uniform(0.1, 0.9)
        wait_for(lambda: (p := part_progress(board, job_id))[1] and p[0] >= frac * p[1], 120,
                 interval=0.005, what="the upload")  # fmt: skip
        proxy.sever()
        zombie_part = part_progress(board, job_id)
        requeued = wait_state(alice, job_id, "queued", timeout=20)
        assert requeued["attempts"] == 1
        farm.farmhand(board, "other")
        done = wait_state(alice, job_id, "succeeded", "failed", timeout=150)
        assert done["state"] == "succeeded" and done["farmhand"] == "other", done["error"]
        healed_at = time.monotonic()
        proxy.heal()
        # The cut-off farmhand comes back: whatever it says next about the job is refused.
        wait_for(lambda: "no longer valid" in cut_off.log(), 90,
                 what="the cut-off farmhand to learn its lease is gone")  # fmt: skip
        wait_for(lambda: not ffmpeg_of(cut_off.root), 30, what="its ffmpeg to stop")
        after = [(req, status) for at, req, status in proxy.exchanges
                 if at >= healed_at and f"/jobs/{job_id}/" in req]  # fmt: skip
    finally:
        proxy.close()
    assert after and all(status == 409 for _, status in after), after
    assert job(alice, job_id)["output"] == done["output"]
    wait_for(lambda: storage_files(board, "uploads") == [], 15, what="the zombie's part to go")
    left = [f for f in storage_files(board, "outputs") if f.startswith(job_id)]
    assert len([f for f in left if f.endswith(".mp4")]) == 1, left
    history = alice.get(f"/api/v1/jobs/{job_id}/history").json()
    assert [a["outcome"] for a in history["attempts"]] == ["lost", "succeeded"]
    final = job(alice, job_id)
    assert final["state"] == "succeeded" and final["farmhand"] == "other"
    record("network-cut", run=run, zombie_had_uploaded=zombie_part[0], of=zombie_part[1],
           zombie_calls_after_heal=after, outputs=1, lost=0, doubled=0)  # fmt: skip


BAD_CLIPS = {
    "corrupt.mp4": b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000),
    "empty.mp4": b"",
}


@pytest.fixture(scope="module")
def bad_sources(web_server, media_dir):
    """URLs of inputs that cannot be rendered, served by the test web server."""
    import pathlib
    import urllib.request

    root = pathlib.Path(urllib.request.url2pathname(_web_root(web_server)))
    for name, content in BAD_CLIPS.items():
        (root / name).write_bytes(content)
    (root / "music-only.m4a").write_bytes((media_dir / "music.m4a").read_bytes())
    return {
        "corrupt video": f"{web_server}/corrupt.mp4",
        "zero-byte file": f"{web_server}/empty.mp4",
        "audio-only file": f"{web_server}/music-only.m4a",
        "404 URL": f"{web_server}/missing.mp4",
        "page without video": f"{web_server}/page.html",
    }


def _web_root(url: str) -> str:
    import gc
    import http.server

    for obj in gc.get_objects():  # the fixture's server knows its folder
        if isinstance(obj, http.server.ThreadingHTTPServer) and url.endswith(
            str(obj.server_address[1])
        ):
            return obj.RequestHandlerClass.keywords["directory"]
    raise LookupError(url)


def test_bad_inputs_fail_once_with_a_message_naming_the_clip(
    farm, media_dir, bad_sources, web_server
):
    board = farm.board(BOARD_RETRY_BASE_S="0.5")
    alice = board.client(board.token("submitter", "alice"))
    good = upload(alice, media_dir / "a.mp4")
    cases = dict(bad_sources)
    cases["trim past the end"] = None
    jobs = {}
    for what, url in cases.items():
        bad = {"url": url} if url else {"url": f"{web_server}/web-clip.mp4", "start": 30.0}
        body = {
            "compilation": {
                "title": what,
                "output": {"width": 320, "height": 180},
                "clips": [{"media": good}, bad],
            }
        }
        r = alice.post("/api/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        jobs[what] = r.json()["id"]
    hand = farm.farmhand(board, "pc1")
    errors = {}
    for what, job_id in jobs.items():
        done = wait_state(alice, job_id, "succeeded", "failed", timeout=90)
        assert done["state"] == "failed", what
        assert done["attempts"] == 1, f"{what}: retried ({done['error']})"
        assert "clip 2" in done["error"] or (cases[what] or "web-clip") in done["error"], (
            f"{what}: {done['error']}"
        )
        errors[what] = done["error"][:160]
    time.sleep(2)  # four retry delays at BOARD_RETRY_BASE_S: a retry loop would show by now
    for what, job_id in jobs.items():
        history = alice.get(f"/api/v1/jobs/{job_id}/history").json()
        assert [a["outcome"] for a in history["attempts"]] == ["failed"], what
        to = [e["to_state"] for e in history["events"]]
        assert to.count("failed") == 1 and to.count("claimed") == 1, (what, to)
    # Bad input is the input's fault: the farmhand is not quarantined for it.
    with board.admin() as admin:
        view = next(f for f in admin.get("/api/v1/farmhands").json() if f["name"] == "pc1")
    assert view["state"] == "active" and view["consecutive_failures"] == 0, view
    assert hand.proc.poll() is None
    record("bad-inputs", cases=len(jobs), attempts_each=1, errors=errors)
