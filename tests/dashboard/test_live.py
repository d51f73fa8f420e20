"""The live stream and the farm summary it carries."""

from __future__ import annotations

import random
import re
import secrets
import statistics

import pytest
from sqlalchemy import Column, Float, MetaData, Table, create_engine, select

from board.dashboard.render import duration
from board.dashboard.summary import sql_percentiles
from tests.dashboard.conftest import submit, upload
from tests.dashboard.web import first_snapshots, next_events, signed_in


def test_the_stream_sends_a_new_snapshot_when_a_job_is_submitted(shared_board, media_dir):
    token = shared_board.token("submitter", f"live-{secrets.token_hex(3)}")
    api = shared_board.client(token)
    clip = upload(api, media_dir / "a.mp4")
    first_job = submit(api, "first", [clip])
    made = []
    with signed_in(shared_board, token) as browser:
        before, after = first_snapshots(
            browser, "view=jobs", count=2, after=lambda: made.append(submit(api, "second", [clip]))
        )
    assert [k for k, _ in before["lists"]["job-rows"]] == [first_job]
    assert [k for k, _ in after["lists"]["job-rows"]] == [made[0], first_job]  # newest first
    counts = re.findall(r'stat-value">(\d+)<', after["regions"]["summary"])
    assert counts[0] == "2"  # queued


def test_the_stream_follows_the_page_s_tab_and_a_job_page(shared_board, media_dir):
    token = shared_board.token("submitter", f"tabs-{secrets.token_hex(3)}")
    api = shared_board.client(token)
    clip = upload(api, media_dir / "a.mp4")
    queued = submit(api, "stays queued", [clip])
    cancelled = submit(api, "gets cancelled", [clip])
    api.post(f"/api/v1/jobs/{cancelled}/cancel").raise_for_status()
    with signed_in(shared_board, token) as browser:
        [tab] = first_snapshots(browser, "view=jobs&state=cancelled")
        assert [k for k, _ in tab["lists"]["job-rows"]] == [cancelled]
        assert "Cancelled" in tab["regions"]["tabs"]
        [page] = first_snapshots(browser, f"view=job&job={queued}")
        assert set(page["regions"]) == {
            "job-head", "job-progress", "job-output", "job-parts", "job-attempts", "job-events"
        }  # fmt: skip
        # a job that was never split has no parts
        assert "<table" not in page["regions"]["job-parts"]
        assert "submitted by" in page["regions"]["job-events"]
        assert browser.get("/dashboard/events?view=nonsense").status_code == 400


def test_a_revoked_session_is_signed_out_of_an_open_page(shared_board):
    name = f"gone-{secrets.token_hex(3)}"
    token = shared_board.token("submitter", name)

    def revoke() -> None:
        with shared_board.admin() as admin:
            assert admin.delete(f"/api/v1/tokens/{name}").status_code == 204

    with signed_in(shared_board, token) as browser:
        seen = next_events(browser, "view=jobs", {"signed-out"}, after=revoke)
        assert seen[0] == "snapshot" and seen[-1] == "signed-out"
        assert browser.get("/").status_code == 303  # the page now sends it to sign in


def _quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def test_queue_wait_percentiles_are_worked_out_by_the_database_like_statistics_does(tmp_path):
    # real SQLite (on PostgreSQL the same statements run in the summary tests of test_views.py)
    engine = create_engine(f"sqlite:///{tmp_path}/waits.db")
    table = Table("waits", MetaData(), Column("wait", Float))
    table.metadata.create_all(engine)
    sample = select(table.c.wait).subquery()

    def percentiles(values: list[float]) -> list[float | None]:
        conn.execute(table.delete())
        if values:
            conn.execute(table.insert(), [{"wait": v} for v in values])
        return sql_percentiles(conn, sample, (0.5, 0.9))

    with engine.begin() as conn:
        assert percentiles([]) == [None, None]
        assert percentiles([4.0]) == [4.0, 4.0]
        assert percentiles([5.0, 1.0, 4.0, 2.0, 3.0])[0] == 3.0
        assert percentiles([float(i) for i in range(10, 0, -1)])[1] == pytest.approx(9.1)
        many = [random.uniform(0, 600) for _ in range(1001)]
        assert percentiles(many) == pytest.approx([_quantile(many, 0.5), _quantile(many, 0.9)])
    engine.dispose()


def test_durations_read_like_a_person_wrote_them():
    assert [duration(s) for s in (0, 45, 65, 3600 + 125, 90000)] == [
        "0s", "45s", "1m 05s", "1h 02m", "1d 1h"
    ]  # fmt: skip
    assert duration(None) == "—"
