"""The board client style both clients share (wire.client), driven through httpx's
MockTransport: what is retried, what each refusal becomes, where a farmhand's upload goes and
who gets its token."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from farmhand.client import BoardClient as FarmhandClient
from submitter.board_client import BoardClient as SubmitterClient
from wire import Heartbeat, routes
from wire.client import call
from wire.errors import BoardError, BoardUnreachable, LeaseLost

BOARD = "http://board.test:8000"


def answering(*answers):
    """A handler giving ``answers`` in turn (an Exception is raised), recording each request."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def test_a_5xx_then_an_answer_is_retried_and_a_refusal_is_not():
    handle, seen = answering(httpx.Response(503), httpx.Response(200, json={"ok": True}))
    with httpx.Client(transport=httpx.MockTransport(handle), base_url=BOARD) as http:
        assert call(lambda: http.get("/x"), "read x", deadline_s=10).json() == {"ok": True}
    assert len(seen) == 2

    handle, seen = answering(httpx.Response(403, json={"status_code": 403, "detail": "no"}))
    with httpx.Client(transport=httpx.MockTransport(handle), base_url=BOARD) as http:
        with pytest.raises(BoardError) as refused:
            call(lambda: http.get("/x"), "read x", deadline_s=10, hints={403: " (a hint)"})
    assert refused.value.status == 403 and len(seen) == 1
    assert refused.value.message == "read x: HTTP 403: no (a hint)"


def test_a_board_that_never_answers_is_unreachable_after_the_deadline():
    handle, seen = answering(httpx.ConnectError("refused"))
    with httpx.Client(transport=httpx.MockTransport(handle), base_url=BOARD) as http:
        with pytest.raises(BoardUnreachable) as gone:
            call(lambda: http.get("/x"), "read x", deadline_s=0.5)
    assert gone.value.status == 0 and "cannot reach the board at http://board.test:8000" in str(
        gone.value
    )
    assert len(seen) >= 1


async def test_a_farmhands_409_is_lease_lost():
    handle, _ = answering(httpx.Response(409, json={"status_code": 409, "detail": "lease gone"}))
    client = FarmhandClient(BOARD, "cf_t", name="pc1", transport=httpx.MockTransport(handle))
    try:
        with pytest.raises(LeaseLost, match="lease gone"):
            await client.heartbeat("j1", Heartbeat(lease_token="l"), deadline_s=5)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "sent_to", "with_token"),
    [
        ("/api/v1/farmhand/jobs/j1/output", f"{BOARD}/api/v1/farmhand/jobs/j1/output", True),
        (f"{BOARD}/elsewhere/j1", f"{BOARD}/elsewhere/j1", True),
        ("https://storage.test/b/j1?sig=abc", "https://storage.test/b/j1?sig=abc", False),
    ],
)
async def test_the_output_goes_to_the_contexts_url_and_the_token_only_to_the_board(
    tmp_path, url, sent_to, with_token
):
    video = tmp_path / "out.mp4"
    video.write_bytes(b"x" * 1000)
    sha = hashlib.sha256(video.read_bytes()).hexdigest()
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(200, json={"received": 0, "size": None})
        assert request.read() == video.read_bytes()
        return httpx.Response(200, json={"received": 1000, "size": 1000, "complete": True})

    client = FarmhandClient(BOARD, "cf_t", name="pc1", transport=httpx.MockTransport(handle))
    try:
        done = await client.upload_output("j1", "lease", video, sha256=sha, url=url, deadline_s=5)
    finally:
        await client.aclose()
    assert done.complete
    # a lease's first upload has nothing to resume: it is sent whole, without asking first
    assert [(r.method, str(r.url)) for r in seen] == [("PUT", sent_to)]
    assert all(("authorization" in r.headers) == with_token for r in seen)
    # the lease is the board's secret too: it goes where the token goes
    assert seen[0].headers.get("x-lease-token") == ("lease" if with_token else None)


def test_the_submitter_reads_jobs_on_the_routes_of_wire_routes():
    handle, seen = answering(
        httpx.Response(200, json={"items": [], "total": 7, "limit": 1, "offset": 0})
    )
    with SubmitterClient(BOARD, "cf_t", transport=httpx.MockTransport(handle)) as client:
        assert client.jobs_total("queued") == 7
    assert seen[0].url.path == routes.JOBS and seen[0].url.params["state"] == "queued"
