"""Two board hosts without a shared disk: two ``board serve`` processes on different data
folders, sharing one PostgreSQL database and one bucket, serve one farm. Every call of a job's
conversation may reach either host (as behind a load balancer), and every byte is in the
bucket, so a host never needs a file only the other has."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from board.spawn import BoardProcess, board_env
from tests.board.actors import API, Farmhand, Submitter, new_lane
from tests.board.test_s3 import begin_output, put_part, upload_media
from tests.harness import RunningBoard, require_pg


@pytest.fixture(scope="module")
def two_hosts(s3, tmp_path_factory) -> Iterator[tuple[RunningBoard, BoardProcess]]:
    require_pg()
    env = s3.board_env()
    first = RunningBoard(tmp_path_factory.mktemp("host-a"), "postgres", env=env).start()
    other_dir = tmp_path_factory.mktemp("host-b")
    second = BoardProcess(
        board_env(other_dir, first.database_url, BOARD_DB_POOL_SIZE="4", **env),
        other_dir / "board.log",
    )
    second.admin_token = first.admin_token
    second.start()
    yield first, second
    second.stop()
    first.close()


def test_a_job_s_conversation_spread_over_two_hosts_sharing_a_bucket(
    two_hosts, media_dir, rendered
):
    first, second = two_hosts
    assert first.env["BOARD_DATA_DIR"] != second.env["BOARD_DATA_DIR"]
    lane = new_lane()
    alice = Submitter(first, lane=lane)
    clip = upload_media(alice, media_dir / "a.mp4")  # uploaded through the first host
    job = alice.submit_ok(alice.compilation(clip["id"]))
    hand_a = Farmhand(first, lane=lane)
    hand_b = Farmhand(second, lane=lane, token=hand_a.token, name=hand_a.name)
    lease = hand_b.claim_ok(wait_s=5)  # claimed on the second
    lease_on_a = type(lease)(hand_a, lease.job_id, lease.token, lease.heartbeat_interval_s)

    ref = lease.context().json()["media"][clip["id"]]  # the second host signs it
    assert hashlib.sha256(httpx.get(ref["url"]).content).hexdigest() == clip["sha256"]
    plan = begin_output(lease_on_a, rendered).json()  # begun on the first
    for part in plan["parts"]:
        assert put_part(part, rendered).status_code == 200
    assert begin_output(lease, rendered).json()["parts"][0]["done"]  # the second sees it
    assert lease.complete().status_code == 200  # completed on the second

    with httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {alice.token}"},
                      follow_redirects=True) as on_second:  # fmt: skip
        assert on_second.get(f"{API}/jobs/{job['id']}").json()["state"] == "succeeded"
        assert on_second.get(f"{API}/jobs/{job['id']}/output").content == rendered
        assert (
            on_second.get(f"{API}/media/{clip['id']}/content").content
            == (media_dir / "a.mp4").read_bytes()
        )
