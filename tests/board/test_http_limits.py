"""What one client may hold of the board (issue 21, hole 4): time and bytes to send a request
head, connections, event streams; and a body nested too deeply for the decoder is a 400.

The server-level bounds are engine-independent and run on SQLite; the body and stream tests run
on both engines."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.board.actors import (
    API,
    Farmhand,
    Submitter,
    board_tracebacks,
    http_client,
    wait_until,
)
from tests.board.conftest import _start, board_with
from tests.harness import RunningBoard

HEAD_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def strict_board(tmp_path_factory) -> Iterator[RunningBoard]:
    env = {"BOARD_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S), "BOARD_MAX_CONNECTIONS": "8"}
    board = _start(tmp_path_factory, "sqlite", env)
    yield board
    board.close()


def raw_connection(board: RunningBoard) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", board.port))
    sock.settimeout(0.2)
    return sock


def closed_by_board(sock: socket.socket) -> bool:
    """Whether the board closed ``sock`` (what it sent before closing is read and dropped)."""
    try:
        while chunk := sock.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def trickle(sock: socket.socket, board: RunningBoard, *, every_s: float, for_s: float) -> float:
    """Send a header line every ``every_s`` until the board closes ``sock``, checking that a
    normal client is served meanwhile; returns how long the board let it go on."""
    started = time.monotonic()
    with httpx.Client(base_url=board.url, timeout=10) as normal:
        for line in range(int(for_s / every_s)):
            try:
                sock.sendall(f"X-Slow-{line}: still here\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            assert normal.get("/health").status_code == 200  # the others are served meanwhile
            if closed_by_board(sock):
                return time.monotonic() - started
            time.sleep(every_s)
    raise AssertionError(f"the board let a slowloris send headers for {for_s:g} s")


def test_a_slowloris_sending_a_header_line_every_second_is_cut_off(strict_board):
    with raw_connection(strict_board) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: board\r\n")
        lasted = trickle(sock, strict_board, every_s=1.0, for_s=30)
    assert lasted < HEAD_TIMEOUT_S + 5


def test_a_connection_that_sends_nothing_is_closed(strict_board):
    with raw_connection(strict_board) as sock:
        wait_until(lambda: closed_by_board(sock), timeout=HEAD_TIMEOUT_S + 10, every=0.1,
                   what="the board to close a silent connection")  # fmt: skip


def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline(strict_board):
    with raw_connection(strict_board) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: board\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        sock.settimeout(0.2)
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        lasted = trickle(sock, strict_board, every_s=1.0, for_s=30)
    assert lasted < HEAD_TIMEOUT_S + 5


def test_blank_lines_after_an_answer_do_not_keep_a_connection_open(strict_board):
    """llhttp skips blank lines between requests without starting one, and uvicorn's idle timer
    stops at any byte: a client sending only CRLFs counts as a head that never completes."""
    with raw_connection(strict_board) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: board\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        sock.settimeout(0.2)
        started = time.monotonic()
        for _ in range(30):
            try:
                sock.sendall(b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            if closed_by_board(sock):
                break
            time.sleep(1.0)
        else:
            raise AssertionError("blank lines kept a connection open for 30 s")
    assert time.monotonic() - started < HEAD_TIMEOUT_S + 5


def test_a_slow_upload_body_is_not_cut_by_the_head_timeout(strict_board, media_dir):
    """The head timeout bounds the request line and headers only: a body may take its time."""
    token = strict_board.token("submitter")
    clip = (media_dir / "a.mp4").read_bytes()
    head = (
        f"POST {API}/media?filename=slow.mp4 HTTP/1.1\r\nHost: board\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(clip)}\r\n\r\n"
    ).encode()
    with raw_connection(strict_board) as sock:
        sock.sendall(head)
        pieces = 6
        step = len(clip) // pieces + 1
        for start in range(0, len(clip), step):  # over 2 × the head timeout in all
            time.sleep(HEAD_TIMEOUT_S * 2 / pieces)
            sock.sendall(clip[start : start + step])
        sock.settimeout(30)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]


def too_big_claim_head(board: RunningBoard, body: bytes) -> bytes:
    """The head of a claim by a new farmhand whose ``body`` is over the route's limit (413)."""
    return (
        f"POST {API}/farmhand/claim HTTP/1.1\r\nHost: board\r\nContent-Type: application/json"
        f"\r\nAuthorization: Bearer {board.token('farmhand')}\r\nContent-Length: {len(body)}"
        "\r\n\r\n"
    ).encode()


def test_the_rest_of_a_body_answered_early_is_no_head(strict_board):
    """A body the board refuses by its Content-Length (413) keeps arriving after the answer:
    those bytes are the body's, and the connection serves the next request."""
    body = b"[" + b"0," * 1_000_000 + b"0]"  # 2 MB, over the farmhand routes' 256 KiB
    head = too_big_claim_head(strict_board, body)
    with raw_connection(strict_board) as sock:
        sock.settimeout(30)
        sock.sendall(head + body + b"GET /health HTTP/1.1\r\nHost: board\r\n\r\n")
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 2 and (chunk := sock.recv(65536)):
            answers += chunk
    first, _, second = answers.partition(b"HTTP/1.1 ")[2].partition(b"HTTP/1.1 ")
    assert first.startswith(b"413 "), answers[:300]
    assert second.startswith(b"200 "), answers[:600]


def test_a_body_s_last_piece_arriving_after_the_answer_is_no_head(strict_board):
    """The client reads the early answer, then sends the rest of its body, its last piece over
    64 KiB in one read (as a farmhand's upload answered 409 before its body was read does):
    those bytes ended a body, not a head, and the next request is served."""
    body = b"[" + b"0," * 200_000 + b"0]"  # 400 kB, over the farmhand routes' 256 KiB
    head = too_big_claim_head(strict_board, body)
    last = 100 * 1024
    with raw_connection(strict_board) as sock:
        sock.settimeout(30)
        sock.sendall(head + body[:-last])
        early = read_answer(sock)
        assert early.startswith(b"HTTP/1.1 413 "), early[:300]
        sock.sendall(body[-last:])
        time.sleep(0.3)  # the board reads the last piece on its own, not with the next head
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: board\r\n\r\n")
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer (its head, then as many bytes as its Content-Length says)."""
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_request_head_over_64_kib_is_refused(strict_board):
    with raw_connection(strict_board) as sock:
        sock.settimeout(10)
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: board\r\nX-Big: " + b"a" * 200_000)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while sending: it refused the rest
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"over 64 KiB" in answer


def test_past_the_connection_limit_new_requests_get_503_until_some_close(strict_board):
    """8 uploads whose heads arrived and whose bodies are still coming hold the board's 8
    places (a slow body is not bounded: a slow link uploads slowly); the next request gets
    uvicorn's 503 until some of them end."""
    token = strict_board.token("submitter")
    head = (
        f"POST {API}/media?filename=slow.mp4 HTTP/1.1\r\nHost: board\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    uploads = [raw_connection(strict_board) for _ in range(8)]
    try:
        for sock in uploads:
            sock.sendall(head + b"\0" * 1000)
        with httpx.Client(base_url=strict_board.url, timeout=10) as other:
            refused = wait_until(  # (once the board has read the 8 heads)
                lambda: (r := other.get("/health")).status_code == 503 and r,
                timeout=10,
                what="a 503 while 8 slow uploads hold the board's 8 places",
            )
            assert refused.content == b"Service Unavailable"  # uvicorn's own answer
        for sock in uploads[:2]:  # (uvicorn counts the asking connection among the 8)
            sock.close()
        with httpx.Client(base_url=strict_board.url, timeout=10) as other:
            wait_until(lambda: other.get("/health").status_code == 200, timeout=10,
                       what="places freed by the uploads that went away")  # fmt: skip
    finally:
        for sock in uploads:
            sock.close()


# ---------------------------------------------------------------- bodies nested too deeply

DEEP_ARRAY = b"[" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000  # under the farmhand routes' 256 KiB


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["arrays", "objects"])
def test_a_body_nested_100k_deep_is_a_400_not_a_500(shared_board, submitter, body):
    fh = Farmhand(shared_board)
    calls = [
        (submitter.http, f"{API}/jobs"),
        (submitter.http, f"{API}/jobs/batch"),
        (fh.http, f"{API}/farmhand/claim"),
        (fh.http, f"{API}/farmhand/status"),
        (fh.http, f"{API}/farmhand/jobs/j-nope/heartbeat"),
        (fh.http, f"{API}/farmhand/jobs/j-nope/complete"),
    ]
    for http, route in calls:
        r = http.post(route, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (route, r.text)
        assert "nests too deeply" in r.json()["detail"], (route, r.text)
    fh.close()
    assert not [line for line in board_tracebacks(shared_board) if "RecursionError" in line]


# ---------------------------------------------------------------- event streams per token

capped_board = board_with({"BOARD_MAX_STREAMS_PER_TOKEN": "2"})


def open_stream(http: httpx.Client, url: str) -> httpx.Response:
    """Start an event stream; the caller closes it."""
    return http.send(http.build_request("GET", url), stream=True)


def test_event_streams_past_the_cap_per_token_get_429(capped_board, media_dir):
    alice = Submitter(capped_board)
    clip = alice.upload(media_dir / "a.mp4")
    job = alice.submit_ok(alice.compilation(clip["id"]))  # queued: its stream stays open
    events = f"{API}/jobs/{job['id']}/events"
    first, second = open_stream(alice.http, events), open_stream(alice.http, "/dashboard/events")
    try:
        assert first.status_code == 200 and second.status_code == 200
        for url in (events, "/dashboard/events"):
            third = open_stream(alice.http, url)
            third.read()  # a refusal is short; a stream would be read until the timeout
            assert third.status_code == 429, (url, third.text)
            assert third.json()["detail"].startswith(
                f"{alice.name} has 2 event streams open on this board already"
            )
        with http_client(capped_board, capped_board.admin_token) as admin:
            theirs = open_stream(admin, events)  # another token has places of its own
            assert theirs.status_code == 200
            theirs.close()
    finally:
        first.close()

    def reopened() -> httpx.Response | None:
        r = open_stream(alice.http, events)
        if r.status_code == 200:
            return r
        r.close()
        return None

    again = wait_until(reopened, timeout=10, what="a place freed by the closed stream")
    again.close()
    second.close()
    alice.close()
