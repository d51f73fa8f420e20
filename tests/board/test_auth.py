"""Who may call what: every route family × every role, and the walls between submitters and
between a farmhand and the jobs it does not hold."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.board.actors import API, Farmhand, Lease, Submitter, new_lane
from tests.harness import RunningBoard

GUARD = "cannot use this route"  # the role guard's message


@dataclass
class World:
    board: RunningBoard
    alice: Submitter
    bob: Submitter
    farmhand: Farmhand
    lease: Lease  # the farmhand holds alice's job `held`
    held: str
    other_job: str  # alice's, queued, not held by anyone
    done_job: str  # alice's, cancelled
    media: str  # used by `held`
    other_media: str  # used only by `other_job`
    revoked: str  # a revoked submitter token
    callers: dict[str, httpx.Client]  # every kind of caller, by name


@pytest.fixture(scope="module")
def world(shared_board, media_dir, rendered) -> Iterator[World]:
    lane = new_lane()
    alice = Submitter(shared_board, lane=lane)
    bob = Submitter(shared_board, lane=lane)
    media = alice.upload(media_dir / "a.mp4")["id"]
    other_media = alice.upload(media_dir / "b.mp4")["id"]
    held = alice.submit_ok(alice.compilation(media), priority=5)["id"]
    other_job = alice.submit_ok(alice.compilation(other_media))["id"]
    done_job = alice.submit_ok(alice.compilation(media))["id"]
    assert alice.http.post(f"{API}/jobs/{done_job}/cancel").status_code == 200
    farmhand = Farmhand(shared_board, lane=lane)
    lease = farmhand.claim_ok()
    assert lease.job_id == held
    revoked_name = f"gone-{lane}"
    revoked = shared_board.token("submitter", revoked_name)
    with shared_board.admin() as admin:
        assert admin.delete(f"{API}/tokens/{revoked_name}").status_code == 204
    board = shared_board
    callers = {
        "nobody": board.client(None),
        "bad": board.client("cf_not-a-real-token"),
        "revoked": board.client(revoked),
        "basic": httpx.Client(base_url=board.url, headers={"Authorization": "Basic YWxpY2U6eA=="}),
        "admin": board.admin(),
        "submitter": alice.http,
        "farmhand": farmhand.http,
    }
    yield World(board, alice, bob, farmhand, lease, held, other_job, done_job, media,
                other_media, revoked, callers)  # fmt: skip
    for client in callers.values():
        client.close()


# (method, path, allowed roles); {job} is a job of alice's, {media} one of her media.
ROUTES = [
    ("POST", "/jobs", {"submitter"}),
    ("POST", "/jobs/batch", {"submitter"}),
    ("GET", "/jobs", {"submitter"}),
    ("GET", "/jobs/{job}", {"submitter"}),
    ("GET", "/jobs/{job}/history", {"submitter"}),
    ("GET", "/jobs/{job}/events", {"submitter"}),
    ("POST", "/jobs/{job}/cancel", {"submitter"}),
    ("POST", "/jobs/{job}/retry", {"submitter"}),
    ("POST", "/jobs/{job}/priority", {"submitter"}),
    ("GET", "/jobs/{job}/output", {"submitter"}),
    ("GET", "/jobs/{job}/thumbnail", {"submitter"}),
    ("POST", "/media", {"submitter"}),
    ("GET", "/media/{media}", {"submitter"}),
    ("GET", "/media/{media}/content", {"submitter", "farmhand"}),
    ("POST", "/farmhand/claim", {"farmhand"}),
    ("POST", "/farmhand/status", {"farmhand"}),
    ("GET", "/farmhand/jobs/{job}/context", {"farmhand"}),
    ("POST", "/farmhand/jobs/{job}/heartbeat", {"farmhand"}),
    ("PUT", "/farmhand/jobs/{job}/output", {"farmhand"}),
    ("GET", "/farmhand/jobs/{job}/output", {"farmhand"}),
    ("PUT", "/farmhand/jobs/{job}/thumbnail", {"farmhand"}),
    ("POST", "/farmhand/jobs/{job}/complete", {"farmhand"}),
    ("POST", "/farmhand/jobs/{job}/fail", {"farmhand"}),
    ("POST", "/farmhand/jobs/{job}/release", {"farmhand"}),
    ("POST", "/tokens", set()),
    ("DELETE", "/tokens/nobody-by-that-name", set()),
    ("GET", "/farmhands", set()),
    ("POST", "/farmhands/nobody-by-that-name/pause", set()),
    ("GET", "/submitters", set()),
    ("PUT", "/submitters/nobody-by-that-name/limits", set()),
]


def _call(client: httpx.Client, method: str, path: str, world: World) -> httpx.Response:
    # The cancelled job for job routes: harmless to touch, and its event stream ends at once.
    url = API + path.format(job=world.done_job, media=world.media)
    # Bodies that are wrong on purpose: a caller who gets past the guard is told off with a 4xx,
    # nothing changes on the board.
    body = b"{}" if method in ("POST", "PUT") else None
    return client.request(method, url, content=body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("method,path,allowed", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_route_checks_token_and_role(world: World, method, path, allowed):
    for who, client in world.callers.items():
        r = _call(client, method, path, world)
        if who in ("nobody", "bad", "revoked", "basic"):
            assert r.status_code == 401, f"{who}: {r.status_code} {r.text}"
            assert r.json()["detail"], "a 401 says why"
        elif who == "admin" or who in allowed:
            assert r.status_code not in (401, 500) and GUARD not in r.text, f"{who}: {r.text}"
        else:
            assert r.status_code == 403 and GUARD in r.json()["detail"], f"{who}: {r.text}"


def test_revoked_and_unknown_tokens_say_so(world: World):
    r = world.callers["revoked"].get(f"{API}/jobs")
    assert r.json()["detail"] == "unknown or revoked token"
    assert "missing token" in world.callers["nobody"].get(f"{API}/jobs").json()["detail"]
    r = world.callers["basic"].get(f"{API}/jobs")
    assert "Bearer" in r.json()["detail"]


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/schema/openapi.json"])
def test_ops_routes_need_no_token(world: World, path):
    assert world.callers["nobody"].get(path).status_code == 200


def test_submitters_cannot_see_each_others_jobs_media_or_outputs(world: World):
    bob = world.bob.http
    for path in ("", "/history", "/events", "/output", "/thumbnail"):
        r = bob.get(f"{API}/jobs/{world.held}{path}")
        assert r.status_code == 404, (path, r.text)
    for action in ("cancel", "retry"):
        assert bob.post(f"{API}/jobs/{world.held}/{action}").status_code == 404
    assert bob.post(f"{API}/jobs/{world.held}/priority", json={"priority": 1}).status_code == 404
    assert bob.get(f"{API}/media/{world.media}").status_code == 404
    assert bob.get(f"{API}/media/{world.media}/content").status_code == 404
    assert bob.get(f"{API}/jobs").json()["total"] == 0
    # Bob may not build a job from Alice's media either.
    r = world.bob.submit(world.bob.compilation(world.media))
    assert r.status_code == 400 and "unknown media id" in r.json()["detail"]
    # Alice and the admin see them.
    assert world.alice.http.get(f"{API}/jobs/{world.held}").status_code == 200
    assert world.alice.http.get(f"{API}/media/{world.media}/content").status_code == 200
    assert world.callers["admin"].get(f"{API}/jobs/{world.held}").status_code == 200


def test_a_finished_job_s_output_is_served_to_its_submitter_only(shared_board, media_dir, rendered):
    lane = new_lane()
    alice, bob = Submitter(shared_board, lane=lane), Submitter(shared_board, lane=lane)
    media = alice.upload(media_dir / "a.mp4")["id"]
    job_id = alice.submit_ok(alice.compilation(media))["id"]
    farmhand = Farmhand(shared_board, lane=lane)
    lease = farmhand.claim_ok()
    assert lease.job_id == job_id
    lease.finish(rendered)
    assert alice.job(job_id)["state"] == "succeeded"
    served = alice.http.get(f"{API}/jobs/{job_id}/output")
    assert served.status_code == 200 and served.content == rendered
    with shared_board.admin() as admin:
        assert admin.get(f"{API}/jobs/{job_id}/output").status_code == 200
    # the same job id, now with something to serve: still not Bob's to see
    for path in ("", "/output", "/thumbnail", "/history"):
        r = bob.http.get(f"{API}/jobs/{job_id}{path}")
        assert r.status_code == 404, (path, r.text)
    r = bob.http.get(f"{API}/jobs/{job_id}/output", headers={"Range": "bytes=0-99"})
    assert r.status_code == 404 and rendered[:100] not in r.content
    for client in (alice, bob, farmhand):
        client.close()


def test_farmhand_downloads_only_media_of_the_job_it_holds(world: World):
    fh = world.farmhand.http
    lease = {"X-Lease-Token": world.lease.token}
    r = fh.get(f"{API}/media/{world.media}/content", headers=lease)
    assert r.status_code == 200 and len(r.content) > 0
    r = fh.get(f"{API}/media/{world.other_media}/content", headers=lease)
    assert r.status_code == 404, "media of a job the farmhand does not hold"
    r = fh.get(f"{API}/media/{world.media}/content")
    assert r.status_code == 403 and "X-Lease-Token" in r.json()["detail"]
    r = fh.get(f"{API}/media/{world.media}/content", headers={"X-Lease-Token": "stale"})
    assert r.status_code == 404
    # Its lease is for one job: another job's context is refused.
    r = fh.get(f"{API}/farmhand/jobs/{world.other_job}/context", headers=lease)
    assert r.status_code == 409


def test_another_farmhand_cannot_use_a_lease_it_was_not_given(world: World):
    intruder = Farmhand(world.board)
    stolen = Lease(intruder, world.held, "a-guessed-token", 10)
    assert stolen.heartbeat().status_code == 409
    assert stolen.context().status_code == 409
    r = intruder.http.get(f"{API}/media/{world.media}/content",
                          headers={"X-Lease-Token": "a-guessed-token"})  # fmt: skip
    assert r.status_code == 404


def test_a_leaked_lease_is_no_key_for_another_farmhand_token(world: World):
    intruder = Farmhand(world.board)
    leaked = Lease(intruder, world.held, world.lease.token, 10)  # the real, valid lease
    r = leaked.heartbeat()
    assert r.status_code == 409 and "another farmhand token" in r.json()["detail"]
    assert leaked.context().status_code == 409
    assert leaked.upload_status().status_code == 409
    r = intruder.http.get(f"{API}/media/{world.media}/content",
                          headers={"X-Lease-Token": world.lease.token})  # fmt: skip
    assert r.status_code == 404
    assert world.lease.heartbeat().status_code == 200  # the rightful holder is unaffected
