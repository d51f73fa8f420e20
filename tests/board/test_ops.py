"""Operations routes, open without a token: /health, /ready, /metrics (queue depth per state,
farmhands online, claim latency) and the OpenAPI schema."""

from __future__ import annotations

import httpx
import pytest

from tests.board.actors import API, Submitter, http_client
from tests.harness import drop_pg_database


def _metrics(board) -> dict[str, float]:
    with http_client(board) as anyone:
        r = anyone.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _total(board, state: str) -> int:
    with http_client(board, board.admin_token) as admin:
        return admin.get(f"{API}/jobs", params={"state": state, "limit": 1}).json()["total"]


def test_health_and_ready_answer_without_a_token(shared_board):
    with http_client(shared_board) as anyone:
        assert anyone.get("/health").json() == {"status": "ok"}
        assert anyone.get("/ready").json() == {"status": "ready"}


def test_metrics_show_queue_depth_farmhands_online_and_claim_latency(
    shared_board, submitter, farmhand_in_lane, media_dir
):
    clip = submitter.upload(media_dir / "a.mp4")
    for _ in range(2):
        submitter.submit_ok(submitter.compilation(clip["id"]))
    before = _metrics(shared_board)
    farmhand_in_lane().claim_ok()
    after = _metrics(shared_board)
    for state in ("queued", "claimed", "running", "succeeded", "failed", "cancelled"):
        assert after[f'clipfarm_jobs{{state="{state}"}}'] == _total(shared_board, state)
    assert after['clipfarm_jobs{state="claimed"}'] == before['clipfarm_jobs{state="claimed"}'] + 1
    assert after["clipfarm_farmhands_online"] >= 1
    count = "clipfarm_claim_latency_seconds_count"
    assert after[count] == before[count] + 1
    buckets = [v for k, v in after.items() if k.startswith("clipfarm_claim_latency_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == after[count]  # cumulative, +Inf last
    assert after['clipfarm_job_transitions_total{to="claimed"}'] >= 1


def test_openapi_schema_is_served_and_names_the_routes(shared_board):
    with http_client(shared_board) as anyone:
        schema = anyone.get("/schema/openapi.json").json()
        assert anyone.get("/schema").status_code == 200
    paths = set(schema["paths"])
    for route in ("/api/v1/jobs", "/api/v1/farmhand/claim", "/api/v1/farmhand/jobs/{job_id}/heartbeat",
                  "/api/v1/media/{media_id}/content", "/metrics"):  # fmt: skip
        assert route in paths, f"{route} missing from {sorted(paths)}"


def test_ready_says_so_when_the_database_is_gone(engine, board_factory, media_dir):
    if engine == "sqlite":
        pytest.skip("an SQLite file next to the board is always reachable")
    board = board_factory()
    Submitter(board).upload(media_dir / "logo.png")
    drop_pg_database(board.pg_name)
    r = httpx.get(f"{board.url}/ready", timeout=30)
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable" and "database" in r.json()["detail"]
    assert httpx.get(f"{board.url}/health").status_code == 200  # the process itself is fine
