"""One compilation rendered by several farmhands at once (docs/architecture.md, "Split render"):
real farmhand processes, real ffmpeg, the pieces joined by stream copy into an output with the
very timeline of an unsplit render; a farmhand killed mid-part costs only that part."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import msgspec
import pytest

from tests.e2e.test_farm import job, upload, wait_state
from tests.harness import ffmpeg_children_of, wait_for
from tests.media import make_clip
from timeline.render import render
from timeline.spec import Compilation

pytestmark = pytest.mark.slow
AAC_FRAME_S = 1024 / 48_000
# Any job splits here: its pieces are tiny, and the farmhands' lease is short so a killed one's
# part comes back within seconds.
SPLIT_ENV = {"BOARD_SPLIT_MIN_WORK_S": "0", "BOARD_LEASE_S": "6", "BOARD_HEARTBEAT_S": "1"}


@pytest.fixture(scope="module")
def twelve(tmp_path_factory) -> list[Path]:
    """An intro, ten clips and an outro: twelve items of various lengths, sizes and sounds."""
    root = tmp_path_factory.mktemp("twelve")
    patterns = ("testsrc2", "smptebars", "rgbtestsrc", "testsrc")
    return [
        make_clip(
            root / f"item{i:02d}.mp4",
            width=(320, 480, 240)[i % 3],
            height=(180, 270, 320)[i % 3],
            duration=1.2 + 0.15 * (i % 4),
            tone_hz=220 + 40 * i,
            pattern=patterns[i % len(patterns)],
            audio=None if i == 5 else "stereo",
        )
        for i in range(12)
    ]


def _compilation(ids: list[str], size: tuple[int, int] = (320, 180)) -> dict:
    intro, *clips, outro = ids
    return {
        "title": "twelve items",
        "output": {"width": size[0], "height": size[1], "fps": 30},
        "intro": {"media": intro},
        "outro": {"media": outro},
        "clips": [{"media": c, "creator": f"player {n}"} for n, c in enumerate(clips)],
        "transitions": {"effect": "fade", "duration": 0.3},
        "fit": "blur",
    }


def _timeline(path: Path) -> tuple[list[str], float]:
    """The video frames' timestamps and the audio stream's length."""
    frames = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    streams = json.loads(probed.stdout)["streams"]
    (audio,) = [s for s in streams if s["codec_type"] == "audio"]
    return sorted(frames, key=float), float(audio["duration"])


def _pieces(client, job_id) -> list[dict]:
    return job(client, job_id)["parts"]


def test_a_twelve_item_job_split_across_three_farmhands_matches_the_unsplit_timeline(
    farm, twelve, tmp_path
):
    board = farm.board(**SPLIT_ENV)
    alice = board.client(board.token("submitter", "alice"))
    ids = [upload(alice, p) for p in twelve]
    hands = [farm.farmhand(board, f"pc{n}") for n in range(3)]
    with board.admin() as admin:  # all three announced and long-polling
        wait_for(lambda: len(admin.get("/api/v1/farmhands").json()) == 3, 60, what="3 farmhands")
    body = {"compilation": _compilation(ids)}
    job_id = alice.post("/api/v1/jobs", json=body).json()["id"]
    done = wait_state(alice, job_id, "succeeded", "failed", timeout=240)
    assert done["state"] == "succeeded", (done["error"], farm.logs()[-4000:])

    pieces = done["parts"]
    kinds = [p["kind"] for p in pieces]
    assert kinds.count("part") >= 2 and kinds.count("audio") == 1 and kinds.count("join") == 1
    assert all(p["state"] == "succeeded" and p["attempts"] == 1 for p in pieces), pieces
    assert len({p["farmhand"] for p in pieces if p["kind"] == "part"}) >= 2, pieces
    # the job list shows the job, not its pieces
    listed = alice.get("/api/v1/jobs", params={"limit": 50}).json()["items"]
    assert [j["id"] for j in listed] == [job_id]

    out = tmp_path / "split.mp4"
    out.write_bytes(alice.get(f"/api/v1/jobs/{job_id}/output").content)
    whole = tmp_path / "whole.mp4"
    compilation = msgspec.convert(_compilation([f"m{i}" for i in range(12)]), Compilation)
    sources = {f"media:m{i}": path for i, path in enumerate(twelve)}
    render(compilation, sources, whole, encoder="libx264")
    split_frames, split_audio = _timeline(out)
    whole_frames, whole_audio = _timeline(whole)
    assert len(split_frames) == len(whole_frames)
    assert split_frames == whole_frames
    assert abs(split_audio - whole_audio) <= AAC_FRAME_S
    for hand in hands:
        assert hand.proc.poll() is None


def test_a_farmhand_killed_mid_part_costs_only_that_part(farm, twelve, tmp_path):
    board = farm.board(**SPLIT_ENV)
    alice = board.client(board.token("submitter", "alice"))
    ids = [upload(alice, p) for p in twelve]
    hands = {f"pc{n}": farm.farmhand(board, f"pc{n}") for n in range(3)}
    with board.admin() as admin:
        wait_for(lambda: len(admin.get("/api/v1/farmhands").json()) == 3, 60, what="3 farmhands")
    body = {"compilation": {**_compilation(ids, size=(1280, 720)), "output": {
        "width": 1280, "height": 720, "fps": 30, "quality": "high"}}}  # fmt: skip
    job_id = alice.post("/api/v1/jobs", json=body).json()["id"]

    def a_part_rendering():
        for piece in _pieces(alice, job_id):
            hand = hands.get(piece["farmhand"] or "")
            if piece["kind"] == "part" and piece["state"] == "running" and hand is not None:
                if ffmpeg_children_of(hand.proc.pid):
                    return piece, hand
        return None

    victim_piece, victim = wait_for(a_part_rendering, 120, what="a part mid-render")
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    done = wait_state(alice, job_id, "succeeded", "failed", timeout=300)
    assert done["state"] == "succeeded", (done["error"], farm.logs()[-4000:])
    pieces = {p["id"]: p for p in done["parts"]}
    assert pieces[victim_piece["id"]]["attempts"] == 2  # lost once, rendered again elsewhere
    assert pieces[victim_piece["id"]]["farmhand"] != victim.name
    others = [p for pid, p in pieces.items() if pid != victim_piece["id"]]
    assert all(p["attempts"] == 1 for p in others), others  # nothing else was redone
    history = alice.get(f"/api/v1/jobs/{victim_piece['id']}/history").json()
    assert [a["outcome"] for a in history["attempts"]] == ["lost", "succeeded"]
