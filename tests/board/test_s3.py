"""A board keeping media and outputs in an S3-compatible store (moto in server mode, with S3's
checks of presigned URLs: ``tests.s3server``), on SQLite and PostgreSQL.

The whole conversation moves its bytes between the clients and the store, never through the
board: the submitter's upload (presigned parts, then the board verifies and probes it), the
farmhand's fetch (a presigned URL in the context), its output (presigned parts, cut and resumed),
the submitter's download (a redirect to a presigned URL). The store takes only what the board
signed: the bytes a part declared, the key the URL names, until the URL expires.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.board.actors import API, Farmhand, Lease, Submitter, new_lane, wait_until
from tests.conftest import ENGINES
from tests.harness import RunningBoard, S3Server, require_pg
from wire import part_checksum

PART = 5 * 1024**2  # the store's smallest part: a 12 MB output goes in three


@pytest.fixture(scope="module", params=ENGINES)
def s3_board(request, s3, tmp_path_factory) -> Iterator[tuple[RunningBoard, str]]:
    """A board per engine keeping its files in a bucket of its own; (board, bucket)."""
    if request.param == "postgres":
        require_pg()
    env = s3.board_env(BOARD_JANITOR_INTERVAL_S="0.5")
    board = RunningBoard(tmp_path_factory.mktemp("s3-board"), request.param, env=env).start()
    yield board, env["BOARD_S3_BUCKET"]
    board.close()


@pytest.fixture(scope="module")
def big_output(media_dir: Path, tmp_path_factory) -> bytes:
    """A real MP4 of 12 MB (a 2 s clip and a ``free`` box): three parts of 5 MiB."""
    clip = (media_dir / "a.mp4").read_bytes()
    padding = 12 * 1024**2 - len(clip)
    return clip + struct.pack(">I4s", padding, b"free") + bytes(padding - 8)


def declare(data: bytes, part_size: int = PART, **extra) -> dict:
    parts = [hashlib.sha256(data[i : i + part_size]).hexdigest()
             for i in range(0, len(data), part_size)]  # fmt: skip
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "part_size": part_size, "parts_sha256": parts, **extra}  # fmt: skip


def put_part(part: dict, data: bytes, part_size: int = PART) -> httpx.Response:
    start = (part["number"] - 1) * part_size
    body = data[start : start + part["size"]]
    checksum = part_checksum(hashlib.sha256(body).hexdigest())
    return httpx.put(part["url"], content=body, headers={"x-amz-checksum-sha256": checksum})


def put_part_cut(part: dict, data: bytes, sent: int, part_size: int = PART) -> None:
    """Start sending a part to the store and drop the connection after ``sent`` bytes."""
    start = (part["number"] - 1) * part_size
    body = data[start : start + part["size"]]
    url = urlsplit(part["url"])
    head = [f"PUT {url.path}?{url.query} HTTP/1.1", f"Host: {url.netloc}",
            f"Content-Length: {len(body)}",
            f"x-amz-checksum-sha256: {part_checksum(hashlib.sha256(body).hexdigest())}"]  # fmt: skip
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:sent])
        time.sleep(0.2)


def upload_media(who: Submitter, path: Path) -> dict:
    """The submitter's upload straight to the store: declare, send the parts, finish."""
    data = path.read_bytes()
    r = who.http.post(f"{API}/media/uploads", json=declare(data, filename=path.name))
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["protocol"] == "s3-multipart"
    if plan["media"] is not None:
        return plan["media"]
    for part in plan["upload"]["parts"]:
        assert put_part(part, data).status_code == 200
    r = who.http.post(plan["finish_url"])
    assert r.status_code in (200, 201), r.text
    again = who.http.post(plan["finish_url"])  # as after a lost answer: the same media
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"], again.text
    return r.json()


def web_job(board: RunningBoard) -> tuple[Submitter, Lease, dict]:
    """A new submitter's job of a web clip, claimed by a new farmhand: (submitter, lease, job)."""
    lane = new_lane()
    alice, hand = Submitter(board, lane=lane), Farmhand(board, lane=lane)
    job = alice.submit_ok({"title": "t", "clips": [{"url": "https://example.com/c.mp4"}]})
    return alice, hand.claim_ok(), job


def send_output(lease: Lease, data: bytes) -> None:
    """The whole output to the store, part by part, and ``complete``."""
    for part in begin_output(lease, data).json()["parts"]:
        assert put_part(part, data).status_code == 200
    assert lease.complete().status_code == 200


def begin_output(lease: Lease, data: bytes, **changes) -> httpx.Response:
    return lease.farmhand.http.post(
        f"{API}/farmhand/jobs/{lease.job_id}/output/multipart",
        json={**declare(data), **changes},
        headers={"X-Lease-Token": lease.token},
    )


def test_the_farm_conversation_moves_every_byte_through_the_store(
    s3_board, s3, media_dir, big_output
):
    board, bucket = s3_board
    lane = new_lane()
    alice, hand = Submitter(board, lane=lane), Farmhand(board, lane=lane)
    clip = upload_media(alice, media_dir / "b.mp4")
    assert f"media/{clip['id'][-2:]}/{clip['id']}" in s3.keys(bucket, "media/")
    job = alice.submit_ok(alice.compilation(clip["id"]))
    lease = hand.claim_ok()

    context = lease.context().json()
    ref = context["media"][clip["id"]]
    assert urlsplit(ref["url"]).port == s3.port  # a presigned URL of the store, not the board
    fetched = httpx.get(ref["url"])  # no token: the URL is the permission
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).hexdigest() == ref["sha256"] == clip["sha256"]
    assert context["output_url"] == f"{API}/farmhand/jobs/{job['id']}/output/multipart"

    # the output in three parts; the second is cut off mid-way, then the upload is resumed
    plan = begin_output(lease, big_output).json()
    assert [p["done"] for p in plan["parts"]] == [False, False, False]
    assert put_part(plan["parts"][0], big_output).status_code == 200
    put_part_cut(plan["parts"][1], big_output, sent=1024**2)
    resumed = begin_output(lease, big_output).json()
    assert resumed["upload_id"] == plan["upload_id"]
    assert [p["done"] for p in resumed["parts"]] == [True, False, False]
    for part in resumed["parts"][1:]:
        assert put_part(part, big_output).status_code == 200
    thumb = httpx.put(context["thumbnail_url"], content=(media_dir / "logo.png").read_bytes())
    assert thumb.status_code == 200
    assert lease.complete(encoder="libx264").status_code == 200

    view = alice.job(job["id"])
    assert view["state"] == "succeeded"
    assert view["output"]["sha256"] == hashlib.sha256(big_output).hexdigest()
    assert view["output"]["size"] == len(big_output) and view["output"]["duration_s"] > 1.9
    answer = alice.http.get(f"{API}/jobs/{job['id']}/output")
    assert answer.status_code == 307, answer.text
    download = httpx.get(answer.headers["location"])
    assert download.content == big_output
    ranged = httpx.get(answer.headers["location"], headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == big_output[100:200]
    picture = alice.http.get(f"{API}/jobs/{job['id']}/thumbnail", follow_redirects=True)
    assert picture.content.startswith(b"\x89PNG")
    keys = s3.keys(bucket, f"outputs/{job['id']}/")
    assert [k.split(".", 1)[1] for k in keys] == ["jpg", "mp4", "mp4.json"]
    assert not s3.keys(bucket, f"uploads/{job['id']}.")  # the upload's note went with it


def test_a_tampered_part_is_refused_and_never_becomes_the_output(s3_board, big_output, rendered):
    alice, lease, job = web_job(s3_board[0])
    plan = begin_output(lease, big_output).json()
    first = plan["parts"][0]
    declared = first["url"]
    other = bytearray(big_output[:PART])
    other[5000] ^= 0xFF
    # other bytes under the declared checksum: the store checks the body against it
    refused = httpx.put(declared, content=bytes(other),
                        headers={"x-amz-checksum-sha256": part_checksum(
                            hashlib.sha256(big_output[:PART]).hexdigest())})  # fmt: skip
    assert refused.status_code == 400 and "BadDigest" in refused.text
    # other bytes with their own checksum: the declared one is signed into the URL
    refused = httpx.put(declared, content=bytes(other),
                        headers={"x-amz-checksum-sha256": part_checksum(
                            hashlib.sha256(bytes(other)).hexdigest())})  # fmt: skip
    assert refused.status_code == 403
    r = lease.complete()
    assert r.status_code == 409 and "unfinished" in r.text, r.text
    assert alice.job(job["id"])["state"] == "claimed"  # not succeeded: still held
    # a file in one part is its part: the board holds the farmhand to the whole sha256
    r = begin_output(lease, rendered, parts_sha256=["0" * 64], part_size=PART)
    assert r.status_code == 400, r.text


def test_a_presigned_url_opens_only_its_own_object(s3_board, media_dir, big_output):
    board, _ = s3_board
    lane = new_lane()
    alice, hand = Submitter(board, lane=lane), Farmhand(board, lane=lane)
    a_media = upload_media(alice, media_dir / "intro.mp4")
    b_media = upload_media(alice, media_dir / "b.mp4")
    alice.submit_ok(alice.compilation(a_media["id"]))
    lease_a = hand.claim_ok()
    alice.submit_ok(alice.compilation(b_media["id"]))
    lease_b = Farmhand(board, lane=lane).claim_ok()
    url_a = lease_a.context().json()["media"][a_media["id"]]["url"]
    url_b = lease_b.context().json()["media"][b_media["id"]]["url"]
    assert httpx.get(url_a).status_code == 200
    forged = url_a.replace(urlsplit(url_a).path, urlsplit(url_b).path)
    assert httpx.get(forged).status_code == 403
    # nor does job A's part URL upload into job B's output
    part = begin_output(lease_a, big_output).json()["parts"][0]
    begin_output(lease_b, big_output)
    b_key = f"outputs/{lease_b.job_id}/"
    forged = part["url"].replace(f"outputs/{lease_a.job_id}/", b_key)
    assert (
        forged != part["url"] and put_part({**part, "url": forged}, big_output).status_code == 403
    )
    # and B's farmhand cannot ask for A's upload: the lease fences the board's route
    r = begin_output(Lease(lease_b.farmhand, lease_a.job_id, lease_b.token, 10), big_output)
    assert r.status_code == 409


def test_media_that_is_not_media_is_refused_and_leaves_nothing(s3_board, s3, media_dir):
    board, bucket = s3_board
    alice = Submitter(board, lane=new_lane())
    path = media_dir / "not-media.txt"
    data = path.read_bytes()
    r = alice.http.post(f"{API}/media/uploads", json=declare(data, filename=path.name))
    plan = r.json()
    key = urlsplit(plan["upload"]["parts"][0]["url"]).path.split(f"/{bucket}/", 1)[1]
    assert put_part(plan["upload"]["parts"][0], data).status_code == 200
    r = alice.http.post(plan["finish_url"])
    assert r.status_code == 400 and "upload a video" in r.text, r.text
    assert key not in s3.keys(bucket, "media/")
    # the same bytes again: declared and answered at once, nothing sent twice
    clip = upload_media(alice, media_dir / "a.mp4")
    again = alice.http.post(
        f"{API}/media/uploads", json=declare((media_dir / "a.mp4").read_bytes())
    )
    assert again.json()["media"]["id"] == clip["id"] and again.json()["upload"] is None


def test_an_upload_through_the_board_lands_in_the_store_too(s3_board, s3, media_dir):
    board, bucket = s3_board
    alice = Submitter(board, lane=new_lane())
    clip = alice.upload(media_dir / "music.m4a")  # a plain POST /api/v1/media with the bytes
    assert f"media/{clip['id'][-2:]}/{clip['id']}" in s3.keys(bucket, "media/")
    answer = alice.http.get(f"{API}/media/{clip['id']}/content")
    assert answer.status_code == 307
    assert httpx.get(answer.headers["location"]).content == (media_dir / "music.m4a").read_bytes()


def test_deleting_an_output_and_media_removes_their_objects(s3_board, s3, media_dir, rendered):
    board, bucket = s3_board
    lane = new_lane()
    alice, hand = Submitter(board, lane=lane), Farmhand(board, lane=lane)
    clip = upload_media(alice, media_dir / "silent.mp4")
    job = alice.submit_ok(alice.compilation(clip["id"]))
    lease = hand.claim_ok()
    send_output(lease, rendered)
    assert s3.keys(bucket, f"outputs/{job['id']}/")
    assert alice.http.delete(f"{API}/jobs/{job['id']}/output").status_code == 204
    assert s3.keys(bucket, f"outputs/{job['id']}/") == []
    assert alice.http.delete(f"{API}/media/{clip['id']}").status_code == 204
    assert s3.keys(bucket, f"media/{clip['id'][-2:]}/{clip['id']}") == []


def test_the_janitor_aborts_the_upload_of_a_lease_that_ended(s3_board, s3, big_output):
    board, bucket = s3_board
    _, lease, _ = web_job(board)
    plan = begin_output(lease, big_output).json()
    assert put_part(plan["parts"][0], big_output).status_code == 200
    assert lease.release().status_code == 200

    def gone() -> bool:
        uploads = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return not any(u["UploadId"] == plan["upload_id"] for u in uploads) and not s3.keys(
            bucket, f"uploads/{lease.job_id}."
        )

    wait_until(gone, timeout=15, what="the janitor to abort the dead lease's upload")


@pytest.fixture(scope="module")
def short_lived(s3: S3Server, tmp_path_factory) -> Iterator[tuple[RunningBoard, str]]:
    """A board on SQLite whose presigned URLs last 2 s and whose outputs are kept 2 s."""
    env = s3.board_env(BOARD_S3_URL_EXPIRY_S="2", BOARD_JANITOR_INTERVAL_S="0.5",
                       BOARD_OUTPUT_RETENTION_DAYS=str(2 / 86400))  # fmt: skip
    board = RunningBoard(tmp_path_factory.mktemp("s3-short"), "sqlite", env=env).start()
    yield board, env["BOARD_S3_BUCKET"]
    board.close()


def test_an_expired_url_is_refused_and_the_board_signs_a_fresh_one(short_lived, media_dir):
    board, _ = short_lived
    lane = new_lane()
    alice, hand = Submitter(board, lane=lane), Farmhand(board, lane=lane)
    clip = upload_media(alice, media_dir / "a.mp4")
    alice.submit_ok(alice.compilation(clip["id"]))
    lease = hand.claim_ok()
    url = lease.context().json()["media"][clip["id"]]["url"]
    assert httpx.get(url).status_code == 200
    time.sleep(3)
    expired = httpx.get(url)
    assert expired.status_code == 403 and "expired" in expired.text
    assert httpx.get(lease.context().json()["media"][clip["id"]]["url"]).status_code == 200


def test_retention_removes_old_outputs_from_the_store(short_lived, s3, rendered):
    board, bucket = short_lived
    alice, lease, job = web_job(board)
    send_output(lease, rendered)
    assert s3.keys(bucket, f"outputs/{job['id']}/")
    wait_until(lambda: not s3.keys(bucket, f"outputs/{job['id']}/"), timeout=20,
               what="retention to remove the output's objects")  # fmt: skip
    assert alice.job(job["id"])["output"] is None
