"""Bad input anywhere gets a 4xx with a message that says what is wrong — never a 5xx, never a
traceback in the board's log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.board.actors import (
    API,
    Farmhand,
    Lease,
    Submitter,
    board_tracebacks,
    http_client,
    new_lane,
    sha256_of,
)
from tests.harness import RunningBoard


@dataclass
class Kit:
    board: RunningBoard
    submitter: Submitter
    farmhand: Farmhand
    lease: Lease  # held by `farmhand`
    clip: str  # a 2 s clip with sound
    silent: str  # a clip without sound
    logo: str  # a picture
    admin: httpx.Client


@pytest.fixture(scope="module")
def kit(shared_board, media_dir) -> Iterator[Kit]:
    lane = new_lane()
    submitter = Submitter(shared_board, lane=lane)
    clip = submitter.upload(media_dir / "a.mp4")["id"]
    silent = submitter.upload(media_dir / "silent.mp4")["id"]
    logo = submitter.upload(media_dir / "logo.png")["id"]
    submitter.submit_ok(submitter.compilation(clip))
    farmhand = Farmhand(shared_board, lane=lane)
    lease = farmhand.claim_ok()
    admin = http_client(shared_board, shared_board.admin_token)
    yield Kit(shared_board, submitter, farmhand, lease, clip, silent, logo, admin)
    assert board_tracebacks(shared_board) == [], "the board logged an unhandled error"
    admin.close()


def refused(r: httpx.Response, status: int, *words: str) -> None:
    """``r`` is a refusal with ``status`` whose message (detail and field notes) has ``words``."""
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    message = r.text.lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in {r.text}"


# (what is wrong, body change, words the answer must contain)
BAD_SUBMITS = [
    ("no compilation", lambda c: {}, ["compilation"]),
    ("clips not a list", lambda c: {"compilation": {"clips": "a.mp4"}}, ["clips", "array"]),
    ("no clips", lambda c: {"compilation": {"clips": []}}, ["clips"]),
    ("priority too high", lambda c: {"compilation": c, "priority": 10**30}, ["priority"]),
    ("priority a string", lambda c: {"compilation": c, "priority": "high"}, ["priority", "int"]),
    ("zero attempts", lambda c: {"compilation": c, "max_attempts": 0}, ["max_attempts"]),
    ("odd width", lambda c: {"compilation": {**c, "output": {"width": 641}}}, ["even", "641"]),
    ("huge height", lambda c: {"compilation": {**c, "output": {"height": 10**6}}}, ["height"]),
    ("negative fps", lambda c: {"compilation": {**c, "output": {"fps": -30}}}, ["fps"]),
    ("unknown codec", lambda c: {"compilation": {**c, "output": {"codec": "divx"}}}, ["codec"]),
    ("unknown quality", lambda c: {"compilation": {**c, "output": {"quality": "ultra"}}},
     ["quality"]),
    ("unknown effect", lambda c: {"compilation": {**c, "transitions": {"effect": "spin"}}},
     ["unknown transition effect 'spin'"]),
    ("negative trim", lambda c: {"compilation": {"clips": [{**c["clips"][0], "start": -1}]}},
     ["start"]),
    ("end before start", lambda c: {"compilation": {"clips": [{**c["clips"][0], "start": 1.5,
                                                              "end": 1.0}]}}, ["end"]),
    ("two sources", lambda c: {"compilation": {"clips": [{**c["clips"][0],
                                                          "url": "https://x.io/a.mp4"}]}},
     ["exactly one of"]),
    ("not a URL", lambda c: {"compilation": {"clips": [{"url": "file:///etc/passwd"}]}}, ["url"]),
    ("unknown field", lambda c: {"compilation": c, "colour": "red"}, ["colour"]),
    ("unknown encoder policy", lambda c: {"compilation": c, "requirements": {"encoder": "tpu"}},
     ["encoder"]),
    ("empty idempotency key", lambda c: {"compilation": c, "idempotency_key": ""},
     ["idempotency_key"]),
    ("NUL in the title", lambda c: {"compilation": {**c, "title": "a\x00b"}}, ["nul"]),
]  # fmt: skip


@pytest.mark.parametrize("change", BAD_SUBMITS, ids=[b[0] for b in BAD_SUBMITS])
def test_malformed_submits_are_refused_naming_the_fault(kit: Kit, change):
    _, body, words = change
    r = kit.submitter.http.post(f"{API}/jobs", json=body(kit.submitter.compilation(kit.clip)))
    refused(r, 400, *words)


def test_submits_that_misuse_media_are_refused(kit: Kit, media_dir):
    sub = kit.submitter
    refused(sub.submit(sub.compilation("m000000000000000000000")), 400, "clip 1", "unknown media")
    refused(sub.submit(sub.compilation("not a media id!")), 400, "clips")
    refused(sub.submit(sub.compilation(kit.logo)), 400, "clip 1", "no video")
    music = {"media": kit.silent}
    refused(sub.submit(sub.compilation(kit.clip, music=music)), 400, "music", "no audio")
    refused(sub.submit(sub.compilation(kit.clip, intro={"path": "intro.mp4"})), 400, "path")
    late = {"compilation": {"clips": [{"media": kit.clip, "start": 9.0}]}}
    refused(sub.http.post(f"{API}/jobs", json=late), 400, "past the end", "2.0")


def test_malformed_json_bodies_are_refused(kit: Kit):
    headers = {"Content-Type": "application/json"}
    for path in ("/jobs", "/jobs/batch", "/farmhand/claim", "/tokens"):
        client = kit.admin if path == "/tokens" else kit.submitter.http
        if path == "/farmhand/claim":
            client = kit.farmhand.http
        r = client.post(f"{API}{path}", content=b'{"compilation": [', headers=headers)
        refused(r, 400, "truncated")
        refused(client.post(f"{API}{path}", content=b"{not json}", headers=headers), 400,
                "json is malformed")  # fmt: skip
        refused(client.post(f"{API}{path}", json=[1, 2]), 400, "object")
    refused(kit.submitter.http.post(f"{API}/jobs/batch", json={"jobs": []}), 400, "jobs")


def test_oversized_json_body_is_413(kit: Kit):
    title = "x" * (5 * 1024 * 1024)
    r = kit.submitter.http.post(f"{API}/jobs", json={"compilation": {"title": title}})
    refused(r, 413)
    big_beat = {"lease_token": kit.lease.token, "message": "x" * 300_000}
    refused(kit.farmhand.http.post(f"{API}/farmhand/jobs/{kit.lease.job_id}/heartbeat",
                                   json=big_beat), 413)  # fmt: skip


@pytest.mark.parametrize(
    "params,words",
    [
        ({"limit": 0}, ["limit"]),
        ({"limit": 100_000}, ["limit"]),
        ({"limit": "ten"}, ["limit"]),
        ({"offset": -1}, ["offset"]),
        ({"offset": 10**30}, ["offset"]),
        ({"state": "sleeping"}, ["unknown state 'sleeping'"]),
        ({"sort": "colour"}, ["unknown sort 'colour'"]),
    ],
)
def test_bad_list_queries_are_refused(kit: Kit, params, words):
    refused(kit.submitter.http.get(f"{API}/jobs", params=params), 400, *words)


def test_odd_ids_are_not_found_or_refused(kit: Kit):
    sub = kit.submitter.http
    assert sub.get(f"{API}/jobs/{'x' * 5000}").status_code == 404
    assert sub.get(f"{API}/jobs/..%2F..%2Fetc").status_code == 404
    refused(sub.get(f"{API}/jobs/j1%00"), 400, "nul")
    refused(sub.get(f"{API}/media/m1%00"), 400, "nul")
    refused(sub.post(f"{API}/jobs/{kit.lease.job_id}/priority", json={"priority": "top"}), 400)
    refused(sub.post(f"{API}/jobs/{kit.lease.job_id}/priority", json={"priority": 5000}), 400)


def test_non_media_uploads_are_refused_and_leave_nothing(kit: Kit, media_dir):
    sub = kit.submitter.http
    media_files = kit.board.data_dir / "files" / "media"
    before = sorted(p.name for p in media_files.rglob("*") if p.is_file())
    refused(sub.post(f"{API}/media", content=b""), 400, "empty")
    text = (media_dir / "not-media.txt").read_bytes()
    refused(sub.post(f"{API}/media", params={"filename": "notes.txt"}, content=text), 400,
            "notes.txt", "not a readable media file")  # fmt: skip
    refused(sub.post(f"{API}/media", content=b"\x00" * 4096), 400, "not a readable media file")
    after = sorted(p.name for p in media_files.rglob("*") if p.is_file())
    assert after == before
    assert not list((kit.board.data_dir / "files" / "tmp").iterdir())


def test_bad_claims_are_refused(kit: Kit):
    fh = kit.farmhand

    def claim(**body):
        base = {"farmhand": fh.name, "capabilities": fh.capabilities}
        return fh.http.post(f"{API}/farmhand/claim", json={**base, **body})

    refused(claim(wait_s=31), 400, "wait_s")
    refused(claim(wait_s=-1), 400, "wait_s")
    refused(claim(farmhand="../etc/passwd"), 400, "farmhand")
    refused(claim(capabilities={"encoders": "libx264"}), 400, "encoders")
    refused(claim(capabilities={"slots": 0}), 400, "slots")
    refused(claim(capabilities={"cores": -2}), 400, "cores")


def test_stale_lease_is_409_before_any_other_check_of_the_body(kit: Kit):
    http, job = kit.farmhand.http, kit.lease.job_id
    url = f"{API}/farmhand/jobs/{job}"
    stale = {"lease_token": "an-old-lease", "progress": 7, "stage": ["wrong"]}
    refused(http.post(f"{url}/heartbeat", json=stale), 409, "no longer valid")
    refused(http.post(f"{url}/fail", json={"lease_token": "an-old-lease"}), 409)
    refused(http.post(f"{url}/complete", json={"lease_token": "old", "render_s": -1}), 409)
    stale_upload = {"X-Lease-Token": "an-old-lease", "X-Upload-Size": "lots"}
    refused(http.put(f"{url}/output", content=b"x", headers=stale_upload), 409)
    # With the valid lease the body is checked, field by field.
    valid = {"lease_token": kit.lease.token}
    refused(http.post(f"{url}/heartbeat", json={**valid, "progress": 1.5}), 400, "progress")
    refused(http.post(f"{url}/heartbeat", json={**valid, "eta_s": -3}), 400, "eta_s")
    refused(http.post(f"{url}/fail", json={**valid, "error": ""}), 400, "error")
    refused(http.post(f"{url}/heartbeat", json={"lease": kit.lease.token}), 400, "lease_token")
    refused(http.post(f"{url}/heartbeat", content=b"{", headers={"Content-Type": "x"}), 400,
            "json")  # fmt: skip
    refused(http.get(f"{url}/context"), 400, "X-Lease-Token")
    assert kit.lease.heartbeat(0.2).status_code == 200  # none of that hurt the lease


def test_bad_output_uploads_are_refused(kit: Kit, rendered):
    lease, http = kit.lease, kit.farmhand.http
    url = f"{API}/farmhand/jobs/{lease.job_id}/output"

    def put(body: bytes, **headers: str):
        return http.put(url, content=body, headers={**lease.upload_headers(rendered), **headers})

    refused(http.put(url, content=rendered), 400, "X-Lease-Token")
    refused(put(rendered, **{"X-Upload-Sha256": "abc"}), 400, "X-Upload-Sha256")
    refused(put(rendered, **{"X-Upload-Size": "many"}), 400, "X-Upload-Size")
    refused(put(rendered, **{"X-Upload-Size": "0"}), 400, "X-Upload-Size")
    refused(put(rendered, **{"X-Upload-Size": "-5"}), 400, "X-Upload-Size")
    refused(put(rendered, **{"X-Upload-Size": str(10**30)}), 400, "limit")
    for bad_range in ("bytes=0-10", "bytes 0-10/5", "bytes a-b/c", "chunks 0-1/2"):
        refused(put(rendered, **{"Content-Range": bad_range}), 400, "Content-Range")
    # A resume that does not continue where the board is: told where to resume.
    half = len(rendered) // 2
    r = put(rendered[:half], **{"Content-Range": f"bytes 0-{half - 1}/{len(rendered)}"})
    assert r.status_code == 200 and r.json()["received"] == half
    r = put(rendered[half + 10 :], **{"Content-Range": f"bytes {half + 10}-{len(rendered) - 1}/"
                                                           f"{len(rendered)}"})  # fmt: skip
    refused(r, 416, f"resume from {half}")
    # More bytes than declared, then a file whose bytes are not what was declared.
    refused(put(rendered + b"extra"), 413, "declared size")
    wrong = bytearray(rendered)
    wrong[100] ^= 0xFF
    r = http.put(url, content=bytes(wrong), headers=lease.upload_headers(rendered))
    refused(r, 400, "sha256 mismatch", sha256_of(bytes(wrong)))
    assert lease.upload_status().json()["received"] == 0  # nothing of it is kept
    refused(lease.complete(), 409, "upload it before completing")
    # A text file, correctly declared, is not a video.
    text = b"definitely not an mp4\n" * 100
    assert http.put(url, content=text, headers=lease.upload_headers(text)).status_code == 200
    refused(lease.complete(), 400, "not a readable video")
    thumb = {"X-Lease-Token": lease.token}
    refused(http.put(url.replace("/output", "/thumbnail"), content=b"GIF89a", headers=thumb),
            400, "JPEG or PNG")  # fmt: skip


def test_bad_range_requests_are_416(kit: Kit):
    url = f"{API}/media/{kit.clip}/content"
    for bad in ("bytes=999999999-", "bytes=10-5", "pages=1-2", "bytes=-0"):
        refused(kit.submitter.http.get(url, headers={"Range": bad}), 416, "bytes")


def test_bad_admin_input_is_refused(kit: Kit):
    admin = kit.admin
    refused(admin.post(f"{API}/tokens", json={"role": "god", "name": "zeus"}), 400, "role")
    refused(admin.post(f"{API}/tokens", json={"role": "admin", "name": "a b"}), 400, "name")
    taken = kit.submitter.name
    refused(admin.post(f"{API}/tokens", json={"role": "admin", "name": taken}), 409, "exists")
    refused(admin.post(f"{API}/farmhands/{kit.farmhand.name}/explode"), 400, "unknown action")
    refused(admin.post(f"{API}/farmhands/nobody-here/pause"), 404, "no farmhand")
    limits = f"{API}/submitters/{taken}/limits"
    refused(admin.put(limits, json={"max_width": -1}), 400, "max_width")
    refused(admin.put(limits, json={"max_width": 3_000_000_000}), 400, "max_width")
    refused(admin.put(limits, json={"monthly_render_seconds": "lots"}), 400,
            "monthly_render_seconds")  # fmt: skip
    refused(admin.put(limits, json={"forced_watermark": "m-nope"}), 400, "unknown media")
    refused(admin.put(limits, json={"forced_watermark": kit.silent.replace("m", "x")}), 400)
    refused(admin.get(f"{API}/submitters/nobody-here"), 404, "no submitter")
