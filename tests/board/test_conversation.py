"""A whole job's life over real HTTP against a running board, on SQLite and PostgreSQL:
upload media → submit → claim → context → heartbeats → resumable upload → complete → download."""

from __future__ import annotations

from tests.board.actors import API, board_tracebacks, farmhand_view, sha256_of, wait_until


def test_full_conversation_from_upload_to_download(
    shared_board, submitter, farmhand_in_lane, media_dir, rendered
):
    intro = submitter.upload(media_dir / "intro.mp4")
    clip = submitter.upload(media_dir / "a.mp4")
    assert clip["sha256"] == sha256_of((media_dir / "a.mp4").read_bytes())
    assert clip["has_video"] and clip["has_audio"] and 1.9 < clip["duration_s"] < 2.1

    job = submitter.submit_ok(submitter.compilation(clip["id"], intro={"media": intro["id"]}))
    assert job["state"] == "queued" and job["attempts"] == 0
    assert job["requirements"]["codec"] == "h264"  # defaults to the output codec

    farmhand = farmhand_in_lane()
    lease = farmhand.claim_ok()
    assert lease.job_id == job["id"]
    assert submitter.job(job["id"])["state"] == "claimed"

    r = lease.context()
    assert r.status_code == 200, r.text
    context = r.json()
    assert context["job_id"] == job["id"] and context["attempt"] == 1
    assert set(context["media"]) == {intro["id"], clip["id"]}
    ref = context["media"][clip["id"]]
    assert ref["sha256"] == clip["sha256"] and ref["size"] == clip["size"]
    assert context["output_url"] == f"{API}/farmhand/jobs/{job['id']}/output"

    # The farmhand downloads the media of the job it holds, in two ranges.
    lease_header = {"X-Lease-Token": lease.token}
    r = farmhand.http.get(ref["url"], headers={**lease_header, "Range": "bytes=0-99"})
    assert r.status_code == 206 and len(r.content) == 100
    rest = farmhand.http.get(ref["url"], headers={**lease_header, "Range": "bytes=100-"})
    assert rest.status_code == 206
    assert sha256_of(r.content + rest.content) == clip["sha256"]

    for progress in (0.1, 0.5, 0.9):
        r = lease.heartbeat(progress)
        assert r.status_code == 200 and r.json()["cancel"] is False, r.text
    seen = submitter.job(job["id"])
    assert seen["state"] == "running" and seen["progress"] == 0.9
    assert seen["farmhand"] == farmhand.name

    # The line drops mid-upload; the farmhand asks how much arrived and resumes from there.
    lease.upload_cut(rendered, sent=len(rendered) // 2)
    received = wait_until(
        lambda: lease.upload_status().json()["received"], what="part of the upload to arrive"
    )
    assert 0 < received <= len(rendered) // 2
    assert submitter.http.get(f"{API}/jobs/{job['id']}/output").status_code == 404
    r = lease.upload(rendered, start=received)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": len(rendered), "size": len(rendered), "complete": True}

    r = lease.complete(encoder="libx264", render_s=1.5, stderr_tail="frame=60")
    assert r.status_code == 200, r.text
    done = submitter.job(job["id"])
    assert done["state"] == "succeeded" and done["progress"] == 1.0
    assert done["output"]["sha256"] == sha256_of(rendered)
    assert done["output"]["size"] == len(rendered)
    assert 1.9 < done["output"]["duration_s"] < 2.1

    r = submitter.http.get(done["output"]["url"])
    assert r.status_code == 200 and r.content == rendered
    assert r.headers["accept-ranges"] == "bytes"
    r = submitter.http.get(done["output"]["url"], headers={"Range": "bytes=10-1009"})
    assert r.status_code == 206 and r.content == rendered[10:1010]
    assert r.headers["content-range"] == f"bytes 10-1009/{len(rendered)}"
    r = submitter.http.get(done["output"]["url"], headers={"Range": "bytes=-500"})
    assert r.status_code == 206 and r.content == rendered[-500:]

    history = submitter.history(job["id"])
    states = [(e["from_state"], e["to_state"]) for e in history["events"]]
    assert states == [
        (None, "queued"),
        ("queued", "claimed"),
        ("claimed", "running"),
        ("running", "succeeded"),
    ]
    [attempt] = history["attempts"]
    assert attempt["outcome"] == "succeeded" and attempt["encoder"] == "libx264"
    assert attempt["stderr_tail"] == "frame=60" and attempt["farmhand"] == farmhand.name

    assert farmhand_view(shared_board, farmhand.name)["jobs_done"] == 1
    assert board_tracebacks(shared_board) == []


def test_heartbeat_keeps_the_farmhand_seen(shared_board, submitter, farmhand_in_lane, media_dir):
    clip = submitter.upload(media_dir / "b.mp4")
    submitter.submit_ok(submitter.compilation(clip["id"]))
    farmhand = farmhand_in_lane()
    lease = farmhand.claim_ok()
    first = farmhand_view(shared_board, farmhand.name)["last_seen_at"]
    wait_until(lambda: lease.heartbeat(0.2).status_code == 200
               and farmhand_view(shared_board, farmhand.name)["last_seen_at"] > first,
               what="a heartbeat to move last_seen_at")  # fmt: skip
    view = farmhand_view(shared_board, farmhand.name)
    assert view["online"] and view["current_jobs"] == [lease.job_id]
