"""The fast lane (``board.api.fastlane``) answers the hot farmhand routes itself and leaves
everything it is not sure of to Litestar. Its answers and refusals are checked by every HTTP test
of the board (they all go through it); here: which requests it takes, and that a body it cannot
judge by its length reaches Litestar whole."""

from __future__ import annotations

import json

import pytest

from board.api.fastlane import _claim, _complete, _fail, _heartbeat, _put_output, _route
from tests.board.actors import API

F = f"{API}/farmhand"


@pytest.mark.parametrize(
    "method,path,taken",
    [
        ("POST", f"{F}/claim", (_claim, "")),
        ("POST", f"{F}/jobs/j1/heartbeat", (_heartbeat, "j1")),
        ("POST", f"{F}/jobs/j1/complete", (_complete, "j1")),
        ("POST", f"{F}/jobs/j1/fail", (_fail, "j1")),
        ("PUT", f"{F}/jobs/j1/output", (_put_output, "j1")),
        ("GET", f"{F}/claim", None),
        ("POST", f"{F}/claim/", None),
        ("GET", f"{F}/jobs/j1/output", None),  # the upload's status: Litestar's
        ("POST", f"{F}/jobs/j1/release", None),
        ("GET", f"{F}/jobs/j1/context", None),
        ("POST", f"{F}/jobs//heartbeat", None),
        ("POST", f"{F}/jobs/j1/heartbeat/", None),
        ("POST", f"{F}/jobs/j1/x/heartbeat", None),
        ("POST", f"{F}/jobs/j1", None),
        ("POST", f"{API}/jobs", None),
    ],
)
def test_the_lane_takes_exactly_the_hot_routes(method, path, taken):
    found = _route(method, path)
    assert (None if found is None else (found[0], found[2])) == taken


def test_a_chunked_claim_body_reaches_litestar_whole(farmhand_in_lane):
    """No Content-Length (a chunked body): the lane cannot know its size before reading it, so
    Litestar reads it, limit and all."""
    fh = farmhand_in_lane()
    body = json.dumps({"farmhand": fh.name, "capabilities": fh.capabilities}).encode()
    headers = {"Content-Type": "application/json"}

    r = fh.http.post(f"{F}/claim", content=iter([body[:10], body[10:]]), headers=headers)
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 204, r.text  # nothing in this lane to claim
    r = fh.http.post(f"{F}/claim", content=iter([body[:10]]), headers=headers)
    assert r.status_code == 400 and "truncated" in r.text.lower(), r.text
