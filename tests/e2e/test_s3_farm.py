"""A real board keeping its files in an S3-compatible store, a real farmhand, real ffmpeg: the
submit CLI's client uploads the media straight to the store, the farmhand fetches it from there
and sends its output there in parts, through a line that drops once mid-upload, and the
submitter downloads the video from the store."""

from __future__ import annotations

import threading
import time

import pytest

from submitter.board_client import BoardClient
from tests.e2e.test_farm import ffprobe, upload, wait_state
from tests.e2e.test_split import SPLIT_ENV, _compilation, twelve  # noqa: F401  (a fixture)
from tests.harness import wait_for
from tests.reliability.tools import ThrottledProxy

pytestmark = pytest.mark.slow


class DropsOnceInAnUpload(ThrottledProxy):
    """A fast line to the store that drops every connection once, ``after`` bytes into the
    first PUT of an output (a key under ``outputs/``), and comes back at once."""

    def __init__(self, target_port: int, after: int) -> None:
        self.after = after
        self.put_at: int | None = None
        self.dropped = threading.Event()
        super().__init__(target_port, up_rate=50e6)

    def _note(self, upstream, client, data) -> None:
        super()._note(upstream, client, data)
        if not upstream or self.dropped.is_set():
            return
        if self.put_at is None and b"PUT /" in data and b"/outputs/" in data.split(b"\r\n")[0]:
            self.put_at = self.up - len(data)
        if self.put_at is not None and self.up - self.put_at > self.after:
            self.dropped.set()
            threading.Thread(target=self._drop, daemon=True).start()

    def _drop(self) -> None:
        self.sever()
        time.sleep(0.3)
        self.heal()


def test_a_farm_on_object_storage_renders_with_every_byte_through_the_store(
    farm, s3, media_dir, tmp_path
):
    line = DropsOnceInAnUpload(s3.port, after=64 * 1024)
    env = s3.board_env(BOARD_S3_PUBLIC_ENDPOINT=line.url)  # clients reach the store by the line
    bucket = env["BOARD_S3_BUCKET"]
    board = farm.board(**env)
    with BoardClient(board.url, board.token("submitter", "alice")) as alice:
        ids = [alice.upload_media(media_dir / n, size=(media_dir / n).stat().st_size)[0].id
               for n in ("intro.mp4", "a.mp4", "b.mp4")]  # fmt: skip
        assert {k.rsplit("/", 1)[1] for k in s3.keys(bucket, "media/")} == set(ids)
        body = {"compilation": {
            "title": "on object storage",
            "output": {"width": 640, "height": 360, "fps": 30, "quality": "high"},
            "intro": {"media": ids[0]},
            "clips": [{"media": ids[1], "creator": "alice"}, {"media": ids[2]}],
            "transitions": {"effect": "fade", "duration": 0.4},
        }}  # fmt: skip
        job_id = alice.http.post("/api/v1/jobs", json=body).json()["id"]
        farm.farmhand(board, "pc1")
        done = wait_state(alice.http, job_id, "succeeded", "failed", timeout=120)
        assert done["state"] == "succeeded", done["error"]
        assert line.dropped.is_set(), "the line never dropped during the upload"
        sent = [status for _, asked, status in line.exchanges if asked.startswith("PUT ")
                and f"/outputs/{job_id}/" in asked and ".mp4?" in asked]  # fmt: skip
        assert sent[-1] == 200  # the part went again after the drop, and arrived
        out = alice.download_output(alice.job(job_id), tmp_path / "out.mp4")
    info = ffprobe(out)
    assert abs(float(info["format"]["duration"]) - (1 + 2 + 2 - 2 * 0.4)) < 0.1
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    keys = s3.keys(bucket, f"outputs/{job_id}/")
    assert [k.split(".", 1)[1] for k in keys] == ["jpg", "mp4", "mp4.json"]
    # the store carried the bytes: the media down to the farmhand, the output up from it
    assert line.down > sum((media_dir / n).stat().st_size for n in ("a.mp4", "b.mp4"))
    assert line.up > out.stat().st_size
    line.close()


def test_a_split_job_s_pieces_meet_in_the_store(farm, s3, twelve, tmp_path):  # noqa: F811
    """Parts and audio uploaded to the store by three farmhands; the join fetches them from it
    on presigned URLs and sends the whole there."""
    env = s3.board_env(**SPLIT_ENV)
    board = farm.board(**env)
    alice = board.client(board.token("submitter", "alice"), follow_redirects=True)
    ids = [upload(alice, p) for p in twelve]
    for n in range(3):
        farm.farmhand(board, f"pc{n}")
    with board.admin() as admin:
        wait_for(lambda: len(admin.get("/api/v1/farmhands").json()) == 3, 60, what="3 farmhands")
    job_id = alice.post("/api/v1/jobs", json={"compilation": _compilation(ids)}).json()["id"]
    done = wait_state(alice, job_id, "succeeded", "failed", timeout=240)
    assert done["state"] == "succeeded", (done["error"], farm.logs()[-4000:])
    kinds = [p["kind"] for p in done["parts"]]
    assert kinds.count("part") >= 2 and kinds.count("join") == 1
    for piece in done["parts"]:  # every piece's output is an object of the bucket
        assert s3.keys(env["BOARD_S3_BUCKET"], f"outputs/{piece['id']}/")
    out = tmp_path / "split.mp4"
    out.write_bytes(alice.get(f"/api/v1/jobs/{job_id}/output").content)
    assert out.stat().st_size == done["output"]["size"]
    assert {s["codec_type"] for s in ffprobe(out)["streams"]} == {"video", "audio"}
