"""Faults injected into a real farm: nothing lost, nothing doubled, nothing half-visible.

Each test can be run longer by hand: ``CLIPFARM_FAULT_RUNS=20 scripts/test tests/reliability``.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.e2e.test_farm import _alive, heavy_job, job, rendering, upload, wait_state
from tests.harness import CuttableProxy, ffmpeg_children_of, wait_for

pytestmark = pytest.mark.slow
RUNS = int(os.environ.get("CLIPFARM_FAULT_RUNS", "2"))


def outputs_on_disk(board, job_id) -> list:
    return sorted((board.data_dir / "files" / "outputs" / job_id).glob("*.mp4"))


@pytest.mark.parametrize("run", range(RUNS))
def test_kill_9_at_a_random_moment_loses_nothing(farm, media_dir, heavy_clips, run):
    rng = random.Random(run)
    board = farm.board(BOARD_LEASE_S="3", BOARD_HEARTBEAT_S="1")
    alice = board.client(board.token("submitter", "alice"))
    job_id = heavy_job(alice, heavy_clips)
    doomed = farm.farmhand(board, f"doomed{run}")
    wait_for(lambda: job(alice, job_id)["state"] in ("claimed", "running"), 60, what="a claim")
    time.sleep(rng.uniform(0.0, 6.0))
    stage = job(alice, job_id)["stage"]
    children = ffmpeg_children_of(doomed.proc.pid)
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    wait_for(lambda: not any(_alive(p) for p in children), 5, what="orphaned ffmpeg to exit")
    rescuer = farm.farmhand(board, f"rescuer{run}")
    done = wait_state(alice, job_id, "succeeded", "failed", timeout=150)
    assert done["state"] == "succeeded", (stage, done["error"])
    assert done["farmhand"] == rescuer.name
    assert len(outputs_on_disk(board, job_id)) == 1, stage
    downloaded = alice.get(f"/api/v1/jobs/{job_id}/output")
    assert len(downloaded.content) == done["output"]["size"]
    print(f"killed during stage {stage!r}: job succeeded once, on the rescuer")


def test_board_restart_mid_render_is_ridden_out(farm, heavy_clips, engine):
    board = farm.board(engine)
    alice = board.client(board.token("submitter", "alice"))
    job_id = heavy_job(alice, heavy_clips)
    hand = farm.farmhand(board, "steady")
    wait_for(lambda: rendering(alice, job_id, hand), 60, what="the render to start")
    board.kill()
    time.sleep(3)  # heartbeats fail meanwhile; the render goes on
    assert ffmpeg_children_of(hand.proc.pid)
    board.start()
    done = wait_state(alice, job_id, "succeeded", "failed", timeout=150)
    assert done["state"] == "succeeded", done["error"]
    assert done["farmhand"] == "steady" and done["attempts"] == 1
    assert hand.proc.poll() is None


def test_network_cut_longer_than_the_lease_reruns_elsewhere_and_the_zombie_is_refused(
    farm, heavy_clips
):
    board = farm.board(BOARD_LEASE_S="4", BOARD_HEARTBEAT_S="1")
    alice = board.client(board.token("submitter", "alice"))
    job_id = heavy_job(alice, heavy_clips)
    proxy = CuttableProxy(board.port)
    try:
        cut_off = farm.farmhand(board, "cut-off", FARMHAND_BOARD_URL=proxy.url)
        wait_for(lambda: rendering(alice, job_id, cut_off), 60, what="the render to start")
        proxy.sever()
        requeued = wait_state(alice, job_id, "queued", timeout=20)
        assert requeued["attempts"] == 1
        farm.farmhand(board, "other")
        done = wait_state(alice, job_id, "succeeded", "failed", timeout=150)
        assert done["state"] == "succeeded" and done["farmhand"] == "other", done["error"]
        proxy.heal()
        # the cut-off farmhand comes back: whatever it does next about the job is refused
        wait_for(
            lambda: "no longer valid" in cut_off.log() or "lease lost" in cut_off.log(),
            90,
            what="the cut-off farmhand to learn its lease is gone",
        )
        wait_for(lambda: not ffmpeg_children_of(cut_off.proc.pid), 30, what="its render to stop")
    finally:
        proxy.close()
    assert len(outputs_on_disk(board, job_id)) == 1
    history = alice.get(f"/api/v1/jobs/{job_id}/history").json()
    assert [a["outcome"] for a in history["attempts"]] == ["lost", "succeeded"]
    final = job(alice, job_id)
    assert final["state"] == "succeeded" and final["farmhand"] == "other"


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
    farm.farmhand(board, "pc1")
    for what, job_id in jobs.items():
        done = wait_state(alice, job_id, "succeeded", "failed", timeout=90)
        assert done["state"] == "failed", what
        assert done["attempts"] == 1, f"{what}: retried ({done['error']})"
        assert "clip 2" in done["error"] or (cases[what] or "web-clip") in done["error"], (
            f"{what}: {done['error']}"
        )
