"""The trust boundary in a real farm: a board process, a `farmhand run` process with its owner's
default settings, a submitter whose clip URL points into the farmhand's network. The job fails
once, for good, and what the submitter reads tells nothing of what answers at that address."""

from __future__ import annotations

import pytest

from tests.e2e.test_farm import upload, wait_state
from tests.farmhand.media_server import Served

pytestmark = pytest.mark.slow


def test_clip_url_into_the_owners_network_fails_once_and_tells_nothing(farm, media_dir, server):
    server.files["/admin"] = Served(body=b"<title>Router</title>session=SECRET-ROUTER-TOKEN",
                                    content_type="text/html", status=401)  # fmt: skip
    board = farm.board()
    alice = board.client(board.token("submitter", "alice"))
    clip = upload(alice, media_dir / "a.mp4")
    body = {"compilation": {
        "title": "probing the owner's router",
        "output": {"width": 320, "height": 180, "fps": 30, "quality": "draft"},
        "clips": [{"media": clip}, {"url": f"{server.url}/admin"}],
    }}  # fmt: skip
    job_id = alice.post("/api/v1/jobs", json=body).json()["id"]
    # The owner's defaults: nothing allowed but the internet ("" is the setting left unset; the
    # test session allows 127.0.0.1 for the other farm tests' web servers).
    farm.farmhand(board, "pc1", FARMHAND_ALLOW_NETWORKS="")

    done = wait_state(alice, job_id, "succeeded", "failed", timeout=90)

    assert done["state"] == "failed" and done["attempts"] == 1, done
    error = done["error"]
    assert "127.0.0.1 is a private or local network address" in error, error
    for leak in ("SECRET", "Router", "401", "HTTP"):
        assert leak not in error, error
    assert server.requests == []  # the farmhand never connected
