"""Submitting: idempotent submit, batch submit with per-item answers, and reading jobs back
(list filters and paging, the live event stream)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from tests.board.actors import API, board_tracebacks


def test_same_idempotency_key_and_body_returns_the_same_job(submitter, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    c = submitter.compilation(clip["id"])
    first = submitter.submit(c, idempotency_key="weekly-47")
    assert first.status_code == 201
    again = submitter.submit(c, idempotency_key="weekly-47")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["idempotency_key"] == "weekly-47"
    assert submitter.http.get(f"{API}/jobs").json()["total"] == 1


def test_same_idempotency_key_with_another_body_is_a_conflict(submitter, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    assert (
        submitter.submit(submitter.compilation(clip["id"]), idempotency_key="k").status_code == 201
    )
    other = submitter.submit(submitter.compilation(clip["id"], title="other"), idempotency_key="k")
    assert other.status_code == 409
    assert "idempotency key 'k'" in other.json()["detail"]


def test_idempotency_keys_belong_to_their_submitter(shared_board, lane, media_dir):
    from tests.board.actors import Submitter

    alice, bob = Submitter(shared_board, lane=lane), Submitter(shared_board, lane=lane)
    for who in (alice, bob):
        clip = who.upload(media_dir / "a.mp4")
        assert who.submit(who.compilation(clip["id"]), idempotency_key="same").status_code == 201


def test_batch_answers_each_item_on_its_own(submitter, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    good = submitter.body(submitter.compilation(clip["id"]))
    unknown_media = submitter.body(submitter.compilation("m0000000000000000000"))
    twin_a = submitter.body(submitter.compilation(clip["id"], title="a"), idempotency_key="twin")
    twin_b = submitter.body(submitter.compilation(clip["id"], title="b"), idempotency_key="twin")
    items = [good, unknown_media, twin_a, twin_a, twin_b, good]
    r = submitter.http.post(f"{API}/jobs/batch", json={"jobs": items})
    assert r.status_code == 200, r.text
    result = r.json()
    statuses = [item["status"] for item in result["items"]]
    assert statuses == [201, 400, 201, 200, 409, 201]
    answers = result["items"]
    assert "unknown media id" in answers[1]["error"] and answers[1]["job"] is None
    assert answers[3]["job"]["id"] == answers[2]["job"]["id"]
    assert "idempotency key 'twin'" in answers[4]["error"]
    assert (result["created"], result["existing"], result["rejected"]) == (3, 1, 2)

    listed = submitter.http.get(f"{API}/jobs").json()
    assert listed["total"] == 3  # nothing half-written for the refused items
    # Re-running the same batch duplicates nothing.
    again = submitter.http.post(f"{API}/jobs/batch", json={"jobs": [twin_a, twin_b]}).json()
    assert [i["status"] for i in again["items"]] == [200, 409]
    assert submitter.http.get(f"{API}/jobs").json()["total"] == 3


def test_a_batch_item_the_database_refuses_fails_alone(submitter, media_dir):
    """A unit of a batch is written with one statement per table; a value the database would
    refuse (a NUL in text) fails that write, which is undone and redone item by item."""
    clip = submitter.upload(media_dir / "a.mp4")["id"]
    items = [submitter.body(submitter.compilation(clip, title=title))
             for title in ("first", "bad\u0000title", "third")]  # fmt: skip
    r = submitter.http.post(f"{API}/jobs/batch", json={"jobs": items})
    assert r.status_code == 200, r.text
    result = r.json()
    assert [item["status"] for item in result["items"]] == [201, 400, 201]
    assert "NUL character" in result["items"][1]["error"]
    titles = sorted(job["title"] for job in submitter.http.get(f"{API}/jobs").json()["items"])
    assert titles == ["first", "third"]  # nothing half-written, nothing written twice


def test_concurrent_identical_batches_make_each_job_once(shared_board, submitter, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    bodies = [
        submitter.body(submitter.compilation(clip["id"], title=f"n{n}"), idempotency_key=f"n{n}")
        for n in range(40)
    ]

    def send(_: int) -> dict:
        r = submitter.http.post(f"{API}/jobs/batch", json={"jobs": bodies})
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, range(4)))
    ids_per_key: dict[int, set[str]] = {}
    for result in results:
        for item in result["items"]:
            assert item["status"] in (200, 201), item
            ids_per_key.setdefault(item["index"], set()).add(item["job"]["id"])
    assert all(len(ids) == 1 for ids in ids_per_key.values())
    assert sum(r["created"] for r in results) == 40
    assert submitter.http.get(f"{API}/jobs").json()["total"] == 40
    assert board_tracebacks(shared_board) == []


def test_concurrent_identical_submits_make_one_job(shared_board, submitter, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    c = submitter.compilation(clip["id"])
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: submitter.submit(c, idempotency_key="once"), range(6)))
    assert sorted(r.status_code for r in answers) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in answers}) == 1


def test_list_filters_by_state_and_pages(submitter, farmhand_in_lane, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    jobs = [submitter.submit_ok(submitter.compilation(clip["id"], title=f"j{n}")) for n in range(5)]
    claimed = farmhand_in_lane().claim_ok().job_id
    cancelled = jobs[4]["id"]
    assert submitter.http.post(f"{API}/jobs/{cancelled}/cancel").status_code == 200

    def listed(**params) -> dict:
        r = submitter.http.get(f"{API}/jobs", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    assert listed(state="claimed")["total"] == 1
    assert [j["id"] for j in listed(state="claimed")["items"]] == [claimed]
    assert listed(state="queued")["total"] == 3
    assert all(j["state"] == "queued" for j in listed(state="queued")["items"])
    both = listed(state=["claimed", "cancelled"])
    assert both["total"] == 2 and {j["id"] for j in both["items"]} == {claimed, cancelled}
    assert listed()["total"] == 5

    first, second = listed(limit=2, offset=0), listed(limit=2, offset=2)
    assert first["total"] == 5 and len(first["items"]) == 2 and len(second["items"]) == 2
    assert not {j["id"] for j in first["items"]} & {j["id"] for j in second["items"]}
    newest_first = [j["id"] for j in listed(sort="-created")["items"]]
    assert newest_first == sorted(newest_first, reverse=True)
    by_title = [j["title"] for j in listed(sort="title")["items"]]
    assert by_title == ["j0", "j1", "j2", "j3", "j4"]

    r = submitter.http.get(f"{API}/jobs", params={"state": "sleeping"})
    assert r.status_code == 400 and "unknown state 'sleeping'" in r.json()["detail"]


def test_event_stream_sends_the_job_and_its_changes(submitter, farmhand_in_lane, media_dir):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    seen: list[dict] = []
    with submitter.http.stream("GET", f"{API}/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        for line in lines:
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))
                if len(seen) == 1:
                    submitter.http.post(f"{API}/jobs/{job['id']}/cancel")
                if seen[-1]["state"] == "cancelled":
                    break
    assert seen[0]["state"] == "queued" and seen[-1]["state"] == "cancelled"
