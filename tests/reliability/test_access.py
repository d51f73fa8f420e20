"""Access, beyond the role matrix of tests/board/test_auth.py: another submitter's objects on
every object route, a farmhand on every route of a job it does not hold, revocation that bites on
the very next request (on another board process too), path traversal in every name and id, and
oversized bodies refused without the board reading them into memory."""

from __future__ import annotations

import copy
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.board.actors import API, Farmhand, Lease, Submitter, sha256_of
from tests.harness import RunningBoard, free_port, wait_for
from tests.reliability.tools import RssSampler, files_under, raw_request, record, storage_files

pytestmark = pytest.mark.slow
MAX_UPLOAD = 8 * 1024 * 1024  # the access board's BOARD_MAX_UPLOAD_BYTES


@dataclass
class Estate:
    """Alice's things on the access board, and Bob, who must not touch them."""

    board: RunningBoard
    alice: Submitter
    bob: Submitter
    media: list[str]
    queued: str
    held: str
    done: str  # succeeded, with an output and a thumbnail
    cancelled: str
    lease: Lease  # a farmhand holds `held`
    output: bytes


@pytest.fixture(scope="module")
def estate(tmp_path_factory, media_dir, heavy_clips) -> Estate:
    # A lease of an hour: the module's held job must stay held however slowly the tests in
    # between run (the default 60 s ran out on a loaded CI machine); leases are not what it tests.
    board = RunningBoard(tmp_path_factory.mktemp("access-board"), "sqlite",
                         env={"BOARD_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
                              "BOARD_LEASE_S": "3600"}).start()  # fmt: skip
    lane = f"lane-{os.urandom(4).hex()}"
    alice, bob = Submitter(board, lane=lane), Submitter(board, lane=lane)
    media = [alice.upload(media_dir / n)["id"] for n in ("a.mp4", "b.mp4", "logo.png",
                                                          "music.m4a")]  # fmt: skip
    done = alice.submit_ok(alice.compilation(media[0]), priority=9, idempotency_key="alice-1")
    worker = Farmhand(board, lane=lane)
    first = worker.claim_ok()
    assert first.job_id == done["id"]
    output = (media_dir / "a.mp4").read_bytes()
    assert first.upload(output).status_code == 200
    thumb = {"X-Lease-Token": first.token, "Content-Type": "image/jpeg"}
    assert worker.http.put(f"{API}/farmhand/jobs/{done['id']}/thumbnail", headers=thumb,
                           content=b"\xff\xd8\xff\xe0" + bytes(100)).status_code == 204  # fmt: skip
    assert first.complete().status_code == 200
    held = alice.submit_ok(alice.compilation(media[1]), priority=5)["id"]
    lease = Farmhand(board, lane=lane).claim_ok()
    assert lease.job_id == held
    queued = alice.submit_ok(alice.compilation(media[0], media[1]))["id"]
    cancelled = alice.submit_ok(alice.compilation(media[1]))["id"]
    assert alice.http.post(f"{API}/jobs/{cancelled}/cancel").status_code == 200
    yield Estate(board, alice, bob, media, queued, held, done["id"], cancelled, lease, output)
    log = board.log_path.read_text(errors="replace")
    board.close()
    assert "Traceback" not in log, log[-3000:]


def snapshot(e: Estate) -> dict:
    """What Bob must not be able to change: every job of Alice's as she sees it."""
    jobs = {j: e.alice.job(j) for j in (e.queued, e.held, e.done, e.cancelled)}
    for view in jobs.values():
        view.pop("updated_at", None)
        view.pop("progress", None)
        view.pop("eta_s", None)
        view.pop("stage", None)
    return jobs


def test_another_submitters_objects_are_denied_on_every_object_route(estate: Estate):
    e, bob = estate, estate.bob.http
    before = snapshot(e)
    denied = 0
    for job in (e.queued, e.held, e.done, e.cancelled):
        for method, path, body in [
            ("GET", "", None), ("GET", "/history", None), ("GET", "/events", None),
            ("GET", "/output", None), ("GET", "/thumbnail", None),
            ("POST", "/cancel", None), ("POST", "/retry", None),
            ("POST", "/priority", {"priority": 1000}),
        ]:  # fmt: skip
            r = bob.request(method, f"{API}/jobs/{job}{path}", json=body)
            assert r.status_code == 404, (job, path, r.status_code, r.text)
            denied += 1
    for m in e.media:
        for path in ("", "/content"):
            r = bob.get(f"{API}/media/{m}{path}", headers={"Range": "bytes=0-99"})
            assert r.status_code == 404, (m, path, r.text)
            denied += 1
    # Nor may Bob build on Alice's media, in any place a compilation names media.
    clip, other, logo, music = e.media
    slots = {
        "clip": {"clips": [{"media": clip}]},
        "intro": {"clips": [{"url": "https://example.com/v.mp4"}], "intro": {"media": other}},
        "outro": {"clips": [{"url": "https://example.com/v.mp4"}], "outro": {"media": other}},
        "stinger": {"clips": [{"url": "https://example.com/a.mp4"},
                              {"url": "https://example.com/b.mp4"}],
                    "transitions": {"stingers": [{"media": other}]}},
        "watermark": {"clips": [{"url": "https://example.com/v.mp4"}],
                      "watermark": {"media": logo}},
        "music": {"clips": [{"url": "https://example.com/v.mp4"}], "music": {"media": music}},
    }  # fmt: skip
    for slot, compilation in slots.items():
        r = e.bob.submit(compilation)
        assert r.status_code == 400 and "unknown media" in r.text, (slot, r.text)
        r = bob.post(f"{API}/jobs/batch", json={"jobs": [e.bob.body(compilation)]})
        assert r.status_code == 200 and r.json()["items"][0]["status"] == 400, (slot, r.text)
        denied += 2
    # Alice's idempotency key is Alice's: Bob's job with the same key is his own, new one.
    r = e.bob.submit({"clips": [{"url": "https://example.com/v.mp4"}]}, idempotency_key="alice-1")
    assert r.status_code == 201 and r.json()["id"] != e.done and r.json()["submitter"] == e.bob.name
    assert {j["id"] for j in bob.get(f"{API}/jobs", params={"limit": 500}).json()["items"]} == {
        r.json()["id"]
    }
    assert snapshot(e) == before, "Bob changed something of Alice's"
    got = e.alice.http.get(f"{API}/jobs/{e.done}/output")
    assert got.status_code == 200 and got.content == e.output  # they are real, and hers
    assert e.alice.http.get(f"{API}/jobs/{e.done}/thumbnail").status_code == 200
    record("access-other-submitter", denied=denied, changed=0)


def test_a_farmhand_reaches_only_the_job_it_holds(estate: Estate):
    e = estate
    mine = e.lease  # holds e.held; every other job is out of its reach, whatever route
    before = snapshot(e)
    refused = 0
    for job in (e.queued, e.done, e.cancelled):
        base = f"{API}/farmhand/jobs/{job}"
        lease = {"X-Lease-Token": mine.token}
        body = {"lease_token": mine.token, "error": "x", "progress": 0.5, "reason": "x"}
        upload = {**lease, "X-Upload-Sha256": sha256_of(e.output),
                  "X-Upload-Size": str(len(e.output))}  # fmt: skip
        for method, path, kwargs in [
            ("GET", "/context", {"headers": lease}),
            ("POST", "/heartbeat", {"json": body}),
            ("GET", "/output", {"headers": lease}),
            ("PUT", "/output", {"headers": upload, "content": e.output}),
            ("PUT", "/thumbnail", {"headers": lease, "content": b"\xff\xd8\xff"}),
            ("POST", "/complete", {"json": body}),
            ("POST", "/fail", {"json": body}),
            ("POST", "/release", {"json": body}),
        ]:
            r = mine.farmhand.http.request(method, base + path, **kwargs)
            assert r.status_code == 409, (job, path, r.status_code, r.text)
            refused += 1
    for m in e.media[2:]:  # media of no job it holds
        r = mine.farmhand.http.get(
            f"{API}/media/{m}/content", headers={"X-Lease-Token": mine.token}
        )
        assert r.status_code == 404
        refused += 1
    assert snapshot(e) == before
    assert not [f for f in storage_files(e.board, "uploads") if not f.startswith(e.held)]
    assert mine.heartbeat().status_code == 200  # its own job is untouched by all that
    record("access-farmhand-other-job", refused=refused, changed=0)


# ---------------------------------------------------------------- revocation


def second_process(board: RunningBoard) -> RunningBoard:
    """Another ``board serve`` on the same database and data folder (a second board host)."""
    other = copy.copy(board)
    other.port = free_port()
    other.url = f"http://127.0.0.1:{other.port}"
    other.log_path = board.data_dir / "board-2.log"
    other.pg_name = None  # the first one owns the database
    other.proc = None
    return other.start()


def test_a_revoked_token_is_refused_at_once(board_factory, media_dir, engine):
    """Every board process refuses a revoked token on the very next request: the one that
    revoked it, a second board on the same database, and the board after `board token revoke`
    ran beside it."""
    board = board_factory(BOARD_LEASE_S="3", BOARD_HEARTBEAT_S="1")
    other = second_process(board)
    try:
        cases = 0
        for role, how in [("admin", "api"), ("submitter", "api"), ("farmhand", "api"),
                          ("submitter", "cli"), ("farmhand", "api-on-the-other-board")]:  # fmt: skip
            name = f"{role}-{how}-{os.urandom(3).hex()}"
            token = board.token(role, name)
            path = {"admin": "/farmhands", "submitter": "/jobs",
                    "farmhand": "/farmhand/status"}[role]  # fmt: skip
            method = "POST" if role == "farmhand" else "GET"
            body = {"farmhand": name} if role == "farmhand" else None
            for b in (board, other):  # in use on both boards, right up to the revoke
                with b.client(token) as c:
                    assert c.request(method, API + path, json=body).status_code == 200
            revoker = other if how == "api-on-the-other-board" else board
            if how == "cli":
                board.cli("token", "revoke", name)
                revoker = None
            else:
                with revoker.admin() as admin:
                    assert admin.delete(f"{API}/tokens/{name}").status_code == 204
            for b in (board, other):
                with b.client(token) as c:
                    r = c.request(method, API + path, json=body)
                assert r.status_code == 401, (role, how, b.url, revoker, r.status_code, r.text)
                assert r.json()["detail"] == "unknown or revoked token"
            cases += 1
        # A farmhand revoked while it holds a job: shut out at once, and the job is not lost.
        alice = Submitter(board)
        job = alice.submit_ok(alice.compilation(alice.upload(media_dir / "a.mp4")["id"]))["id"]
        doomed = Farmhand(board)
        lease = doomed.claim_ok()
        assert lease.heartbeat().status_code == 200
        with board.admin() as admin:
            assert admin.delete(f"{API}/tokens/{doomed.name}").status_code == 204
        output = (media_dir / "a.mp4").read_bytes()
        assert lease.heartbeat().status_code == 401
        assert lease.upload(output).status_code == 401
        assert lease.complete().status_code == 401
        requeued = wait_for(lambda: alice.job(job)["state"] == "queued", 15, what="a requeue")
        assert requeued
        Farmhand(board).claim_ok().finish(output)
        assert alice.job(job)["state"] == "succeeded"
    finally:
        other.stop()
    record("access-revoke", engine=engine, revocations=cases + 1, admitted_after_revoke=0)


# ---------------------------------------------------------------- path traversal

CANARY = f"clipfarm-canary-{os.urandom(4).hex()}"
TRAVERSALS = [
    f"../../../../../../tmp/{CANARY}",
    f"..%2F..%2F..%2F..%2Ftmp%2F{CANARY}",
    f"%2e%2e%2f%2e%2e%2f%2e%2e%2f{CANARY}",
    f"%252e%252e%252f{CANARY}",
    f"/tmp/{CANARY}",
    f"..\\..\\..\\{CANARY}",
    f"..%5C..%5C{CANARY}",
    f"{CANARY}%00.mp4",
    f"....//....//{CANARY}",
    f"C:\\Windows\\{CANARY}",
]


def test_path_traversal_in_any_name_or_id_is_refused_and_writes_nothing_outside(
    estate: Estate, media_dir
):
    e = estate
    root = e.board.data_dir.parent
    # other boards of this session (their logs grow as their reapers work) are not outside
    # files this board could have written
    outside = {k: v for k, v in files_under(root).items()
               if not k.startswith(e.board.data_dir.name + "/")
               and not k.endswith("/board.log")}  # fmt: skip
    alice = {"Authorization": f"Bearer {e.alice.token}"}
    farm = {"Authorization": f"Bearer {e.lease.farmhand.token}", "X-Lease-Token": e.lease.token}
    admin = {"Authorization": f"Bearer {e.board.admin_token}"}
    answers = []
    for bad in TRAVERSALS:
        for method, target, headers in [
            ("GET", f"{API}/jobs/{bad}", alice),
            ("GET", f"{API}/jobs/{bad}/output", alice),
            ("POST", f"{API}/jobs/{bad}/cancel", alice),
            ("GET", f"{API}/media/{bad}", alice),
            ("GET", f"{API}/media/{bad}/content", alice),
            ("GET", f"{API}/media/{bad}/content", farm),
            ("GET", f"{API}/farmhand/jobs/{bad}/context", farm),
            ("PUT", f"{API}/farmhand/jobs/{bad}/output", farm),
            ("PUT", f"{API}/farmhand/jobs/{bad}/thumbnail", farm),
            ("DELETE", f"{API}/tokens/{bad}", admin),
            ("GET", f"{API}/submitters/{bad}", admin),
            ("PUT", f"{API}/submitters/{bad}/limits", admin),
            ("POST", f"{API}/farmhands/{bad}/pause", admin),
        ]:
            body = b"{}"  # small: the board may answer before reading a body
            extra = {"X-Upload-Sha256": sha256_of(body), "X-Upload-Size": str(len(body))}
            status, _ = raw_request(e.board.url, method, target,
                                    {**headers, **extra, "Content-Type": "application/json"},
                                    body)  # fmt: skip
            assert status in (400, 404, 405, 409), (method, target, status)
            answers.append(status)
        # names carried in bodies
        plain = bad.replace("%2F", "/").replace("%2e", ".").replace("%00", "\x00")
        r = e.lease.farmhand.http.post(f"{API}/farmhand/status", json={"farmhand": plain})
        assert r.status_code == 400, r.text
        r = e.lease.farmhand.http.post(f"{API}/farmhand/claim",
                                       json={"farmhand": plain, "capabilities": {}})  # fmt: skip
        assert r.status_code == 400, r.text
        with e.board.admin() as a:
            r = a.post(f"{API}/tokens", json={"role": "submitter", "name": plain})
            assert r.status_code == 400, r.text
            r = a.put(f"{API}/submitters/{e.alice.name}/limits", json={"forced_watermark": plain})
            assert r.status_code == 400, r.text
        answers += [400] * 4
    # A media file's name is only ever a display name: cleaned, never a path.
    sources = sorted(p for p in media_dir.iterdir() if p.suffix in (".mp4", ".m4a", ".png"))
    for i, bad in enumerate(TRAVERSALS[: len(sources)]):
        content = sources[i].read_bytes() + os.urandom(16)  # distinct bytes: no dedup
        name = bad.replace("%2F", "/").replace("%00", "\x00")
        via_header = i % 2 == 1
        r = e.alice.http.post(
            f"{API}/media",
            params=None if via_header else {"filename": name},
            headers={"X-Filename": name.replace("\x00", "")} if via_header else None,
            content=content,
        )
        if r.status_code == 400:  # not media after all (a tail of random bytes): refused is fine
            continue
        assert r.status_code == 201, r.text
        shown = r.json()["filename"]
        assert re.fullmatch(r"[A-Za-z0-9._ -]+", shown) and not shown.startswith("."), shown
        got = e.alice.http.get(f"{API}/media/{r.json()['id']}/content")
        assert got.status_code == 200 and got.content == content
        assert f'filename="{shown}"' in got.headers["content-disposition"]
    # Nothing written outside the data folder, nothing named after the canary anywhere.
    after = {k: v for k, v in files_under(root).items()
             if not k.startswith(e.board.data_dir.name + "/")
             and not k.endswith("/board.log")}  # fmt: skip
    assert after == outside
    for place in (Path("/tmp"), root, e.board.data_dir):
        assert not list(place.glob(f"**/*{CANARY}*")), place
    assert not list(Path("/").glob(f"*{CANARY}*"))
    allowed = re.compile(
        r"^(board\.db(-wal|-shm|-journal)?|board(-2)?\.log|files/media/[a-z0-9]{2}/m[a-z0-9]+"
        r"|files/outputs/[a-z0-9]+/[0-9a-f]{24}\.(mp4|mp4\.json|jpg)"
        r"|files/uploads/[a-z0-9]+\.[0-9a-f]{24}\.part(\.json)?)$"
    )
    strays = [k for k in files_under(e.board.data_dir) if not allowed.match(k)]
    assert strays == [], strays
    record("access-traversal", attempts=len(answers), statuses=sorted(set(answers)),
           written_outside=0)  # fmt: skip


# ---------------------------------------------------------------- oversized bodies

BIG = 200 * 1024 * 1024


def stream_body(url: str, target: str, headers: dict[str, str], *, chunked: bool) -> tuple:
    """POST/PUT ``BIG`` bytes of junk to ``target`` as fast as the board takes them, and return
    (status, bytes sent before the answer or the hang-up)."""
    method, _, path = target.partition(" ")
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BIG}"
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", framing,
            *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sent = 0
    block = os.urandom(1024 * 1024)
    stop = threading.Event()

    def pump() -> None:
        nonlocal sent
        try:
            while sent < BIG and not stop.is_set():
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                sent += len(block)
            if chunked and not stop.is_set():
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the board hung up: that is allowed

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    answer = b""
    try:
        while b"\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    finally:
        stop.set()
        pumper.join(60)
        sock.close()
    return int(answer.split()[1]), sent


def test_oversized_bodies_are_413_without_the_board_holding_them(estate: Estate):
    e = estate
    pid = e.board.proc.pid
    # The module's lease (claimed in the fixture, an hour long) still holds: a lost one would make
    # the thumbnail route answer 409 before the body.
    assert e.lease.heartbeat().status_code == 200
    alice = {"Authorization": f"Bearer {e.alice.token}", "Content-Type": "application/json"}
    farm = {"Authorization": f"Bearer {e.lease.farmhand.token}", "X-Lease-Token": e.lease.token}
    base = f"{API}/farmhand/jobs/{e.held}"
    media_before = storage_files(e.board, "media")
    figures = []
    for target, headers in [
        (f"POST {API}/jobs", alice),
        (f"POST {API}/jobs/batch", alice),
        (f"POST {base}/heartbeat", {**farm, "Content-Type": "application/json"}),
        (f"POST {API}/media?filename=huge.mp4", alice),
        (f"PUT {base}/thumbnail", {**farm, "Content-Type": "image/jpeg"}),
        (f"PUT {base}/output", {**farm, "X-Upload-Sha256": "0" * 64,
                                "X-Upload-Size": str(MAX_UPLOAD)}),
    ]:  # fmt: skip
        for chunked in (False, True):
            with RssSampler(pid) as rss:
                status, sent = stream_body(e.board.url, target, headers, chunked=chunked)
            assert status == 413, (target, chunked, status)
            assert rss.growth < 48 * 1024 * 1024, (target, chunked, rss.growth)
            figures.append({"route": target, "chunked": chunked, "sent_mb": sent >> 20,
                            "rss_growth_mb": round(rss.growth / 2**20, 1)})  # fmt: skip
    # A thumbnail under the route's limit but over the thumbnail limit: refused, nothing kept.
    r = e.lease.farmhand.http.put(f"{base}/thumbnail", content=b"\xff\xd8" + bytes(5_500_000),
                                  headers={"X-Lease-Token": e.lease.token})  # fmt: skip
    assert r.status_code == 413, r.text
    assert storage_files(e.board, "media") == media_before
    assert storage_files(e.board, "tmp") == []
    assert [f for f in storage_files(e.board, "outputs") if f.endswith(".jpg")
            and f.startswith(e.held)] == []  # fmt: skip
    assert e.lease.heartbeat().status_code == 200  # the board and the lease are fine
    record("access-oversized", body_mb=BIG >> 20, cases=figures)
