"""Quotas that hold (issue 21, hole 5): outputs count against the storage quota and a full
quota refuses new jobs; submitters (and admins) delete their media, jobs and outputs, files
included; outputs past the retention go; the month is charged a URL clip's real length."""

from __future__ import annotations

from pathlib import Path

from tests.board.actors import API, Farmhand, Submitter, http_client, wait_until
from tests.board.conftest import board_with
from tests.harness import RunningBoard

URL_CLIP = "https://media.example.com/vod/highlight.mp4"


def set_limits(board: RunningBoard, name: str, **limits) -> None:
    with http_client(board, board.admin_token) as admin:
        r = admin.put(f"{API}/submitters/{name}/limits", json=limits)
        assert r.status_code == 200, r.text


def submitter_view(board: RunningBoard, name: str) -> dict:
    with http_client(board, board.admin_token) as admin:
        r = admin.get(f"{API}/submitters/{name}")
        assert r.status_code == 200, r.text
        return r.json()


def media_file(board: RunningBoard, media_id: str) -> Path:
    return board.data_dir / "files" / "media" / media_id[-2:] / media_id


def output_files(board: RunningBoard, job_id: str) -> list[str]:
    folder = board.data_dir / "files" / "outputs" / job_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_outputs_count_against_the_quota_and_a_full_quota_refuses_new_jobs(
    shared_board, submitter, farmhand_in_lane, media_dir, rendered
):
    clip = submitter.upload(media_dir / "a.mp4")
    set_limits(shared_board, submitter.name, storage_quota_bytes=clip["size"] + len(rendered) // 2)
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    farmhand_in_lane().claim_ok().finish(rendered)  # an accepted job's output is always kept
    assert submitter.job(job["id"])["state"] == "succeeded"
    used = submitter_view(shared_board, submitter.name)["storage_bytes"]
    assert used == clip["size"] + len(rendered)

    r = submitter.submit(submitter.compilation(clip["id"]))
    assert r.status_code == 403, r.text
    assert (
        f"its whole storage quota of {clip['size'] + len(rendered) // 2} bytes"
        in (r.json()["detail"])
    )
    batch = submitter.http.post(
        f"{API}/jobs/batch", json={"jobs": [submitter.body(submitter.compilation(clip["id"]))]}
    )
    assert batch.json()["items"][0]["status"] == 403
    r = submitter.http.post(f"{API}/media", content=(media_dir / "b.mp4").read_bytes())
    assert r.status_code == 413, r.text

    assert submitter.http.delete(f"{API}/jobs/{job['id']}/output").status_code == 204
    assert submitter_view(shared_board, submitter.name)["storage_bytes"] == clip["size"]
    assert submitter.submit(submitter.compilation(clip["id"])).status_code == 201


def test_media_is_deleted_with_its_file_but_not_while_an_unfinished_job_uses_it(
    shared_board, submitter, media_dir
):
    clip = submitter.upload(media_dir / "b.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    assert media_file(shared_board, clip["id"]).is_file()

    r = submitter.http.delete(f"{API}/media/{clip['id']}")
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith(
        f"media {clip['id']} is used by unfinished job {job['id']}"
    )
    other = Submitter(shared_board)
    assert other.http.delete(f"{API}/media/{clip['id']}").status_code == 404
    other.close()
    fh = Farmhand(shared_board)
    assert fh.http.delete(f"{API}/media/{clip['id']}").status_code == 403
    fh.close()

    assert submitter.http.post(f"{API}/jobs/{job['id']}/cancel").status_code == 200
    assert submitter.http.delete(f"{API}/media/{clip['id']}").status_code == 204
    assert submitter.http.get(f"{API}/media/{clip['id']}").status_code == 404
    assert not media_file(shared_board, clip["id"]).exists()
    r = submitter.http.post(f"{API}/jobs/{job['id']}/retry")
    assert r.status_code == 409, r.text
    assert f"uses media that was deleted ({clip['id']})" in r.json()["detail"]
    assert submitter.job(job["id"])["state"] == "cancelled"
    assert submitter.submit(submitter.compilation(clip["id"])).status_code == 400  # unknown media


def test_a_job_is_deleted_once_final_with_its_output_files(
    shared_board, submitter, farmhand_in_lane, media_dir, rendered
):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    lease = farmhand_in_lane().claim_ok()
    r = submitter.http.delete(f"{API}/jobs/{job['id']}")
    assert r.status_code == 409, r.text
    assert (
        r.json()["detail"]
        == f"job {job['id']} is claimed; cancel it first (POST …/cancel), then delete it"
    )

    lease.finish(rendered)
    assert any(name.endswith(".mp4") for name in output_files(shared_board, job["id"]))
    used_s = submitter_view(shared_board, submitter.name)["render_seconds_this_month"]
    assert submitter.http.delete(f"{API}/jobs/{job['id']}").status_code == 204
    assert submitter.http.get(f"{API}/jobs/{job['id']}").status_code == 404
    assert submitter.http.get(f"{API}/jobs/{job['id']}/output").status_code == 404
    assert output_files(shared_board, job["id"]) == []
    view = submitter_view(shared_board, submitter.name)
    assert view["render_seconds_this_month"] == used_s  # what was rendered stays charged
    assert view["storage_bytes"] == clip["size"]
    assert submitter.http.delete(f"{API}/jobs/{job['id']}").status_code == 404


def test_an_admin_deletes_a_submitter_s_output_and_job(
    shared_board, submitter, farmhand_in_lane, media_dir, rendered
):
    clip = submitter.upload(media_dir / "a.mp4")
    job = submitter.submit_ok(submitter.compilation(clip["id"]))
    farmhand_in_lane().claim_ok().finish(rendered)
    other = Submitter(shared_board)
    assert other.http.delete(f"{API}/jobs/{job['id']}/output").status_code == 404
    other.close()
    with http_client(shared_board, shared_board.admin_token) as admin:
        assert admin.delete(f"{API}/jobs/{job['id']}/output").status_code == 204
        assert admin.delete(f"{API}/jobs/{job['id']}/output").status_code == 404
        assert submitter.job(job["id"])["output"] is None
        assert submitter.job(job["id"])["state"] == "succeeded"
        events = submitter.history(job["id"])["events"]
        assert events[-1]["message"] == "output deleted by admin"
        assert output_files(shared_board, job["id"]) == []
        assert admin.delete(f"{API}/jobs/{job['id']}").status_code == 204
        assert admin.delete(f"{API}/media/{clip['id']}").status_code == 204


retention_board = board_with(
    {"BOARD_OUTPUT_RETENTION_DAYS": "0.00003", "BOARD_JANITOR_INTERVAL_S": "0.5"}  # 2.6 s
)


def test_outputs_past_the_retention_are_removed(retention_board, media_dir, rendered):
    who = Submitter(retention_board)
    clip = who.upload(media_dir / "a.mp4")
    job = who.submit_ok(who.compilation(clip["id"]))
    Farmhand(retention_board).claim_ok().finish(rendered)
    assert who.job(job["id"])["output"] is not None
    wait_until(lambda: who.job(job["id"])["output"] is None, timeout=30,
               what="the output to be removed by the retention")  # fmt: skip
    assert who.http.get(f"{API}/jobs/{job['id']}/output").status_code == 404
    assert output_files(retention_board, job["id"]) == []
    assert who.history(job["id"])["events"][-1]["message"] == (
        "output removed: older than 3e-05 days (retention)"
    )
    assert who.job(job["id"])["state"] == "succeeded"
    assert media_file(retention_board, clip["id"]).is_file()  # media is the submitter's to delete


def test_the_month_is_charged_a_url_clip_s_real_length_once_it_is_rendered(
    shared_board, submitter, farmhand_in_lane, rendered
):
    """A URL clip is estimated at BOARD_URL_CLIP_ESTIMATE_S (30 s) while its job waits; once
    the job is done the month holds the output's real length (2 s) and no estimate."""
    set_limits(shared_board, submitter.name, monthly_render_seconds=65)
    url_job = submitter.compilation(title="vod")
    url_job["clips"] = [{"url": URL_CLIP}]
    first = submitter.submit_ok(url_job)
    assert first["estimate_s"] == 30
    submitter.submit_ok(url_job)  # 60 of 65 s promised to unfinished jobs
    r = submitter.submit(url_job)
    assert r.status_code == 403 and "only 5.0 s of the 65 monthly" in r.json()["detail"]

    farmhand_in_lane().claim_ok().finish(rendered)  # the first job: 2 s of real video
    view = submitter_view(shared_board, submitter.name)
    assert 1.9 < view["render_seconds_this_month"] < 2.1
    assert submitter.submit(url_job).status_code == 201  # 2 s used + 30 + 30 waiting
    r = submitter.submit(url_job)
    left = 65 - view["render_seconds_this_month"] - 60
    assert r.status_code == 403 and f"only {left:.1f} s of the 65 monthly" in r.json()["detail"]
