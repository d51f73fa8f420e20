"""The farmhand's hot routes as plain ASGI, in front of Litestar.

Every cycle of every farmhand is a claim, heartbeats, an upload and a complete (or fail). Under
load Litestar's own layers (scope and connection objects, routing, the auth middleware, the
handler's signature model, the response object) cost about a fifth of the board's CPU on those
routes, more than the token lookup and the claim's SQL together (py-spy; BENCHMARKS.md).
``FastLane`` answers them itself with the very service functions the Litestar routes call (the
routes stay, for everything below and for the OpenAPI schema).

It takes a request only when it has no doubt about it: the exact method and path, a well-formed
``Bearer`` token that is valid and has the farmhand (or admin) role, a JSON body within the
route's limit whose declared length it knows, a body of the right shape. Anything else (no
token, a cookie, a wrong role, a chunked or oversized body, JSON Litestar's validation must word
the refusal of) goes to Litestar, the body it read replayed, so every refusal is Litestar's own,
word for word. What the services raise is answered as ``board.http`` answers it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from board import lifecycle
from board.api.farmhands import SMALL_BODY, claim_job, fenced, own_lease
from board.auth import Principal, authenticate
from board.errors import BoardError
from board.outputs import complete_job, receive_output
from board.state import BoardState
from wire import API, ClaimRequest, Complete, Fail, Heartbeat

log = logging.getLogger("board.http")
PREFIX = f"{API}/farmhand/"
JOBS = f"{API}/farmhand/jobs/"
ROLES = ("farmhand", "admin")
WANTED = {
    b"authorization",
    b"content-length",
    b"x-lease-token",
    b"x-upload-sha256",
    b"x-upload-size",
    b"content-range",
    b"cookie",
}
_decode_claim = msgspec.json.Decoder(ClaimRequest).decode
_encode = msgspec.json.Encoder().encode
JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client hung up before its body was whole: there is nobody to answer."""


class Request:
    """What a fast-lane route needs of one request."""

    __slots__ = ("body", "headers", "job_id", "receive", "who")

    def __init__(self, headers: dict[bytes, bytes], job_id: str, receive: Receive) -> None:
        self.headers = headers
        self.job_id = job_id
        self.receive = receive
        self.body = b""
        self.who: Principal | None = None

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            if chunk := message.get("body", b""):
                yield chunk
            if not message.get("more_body", False):
                return


Route = Callable[[BoardState, Request], Awaitable[Any]]
NOT_MINE = object()  # a route's answer: Litestar takes this request after all


async def _claim(board: BoardState, req: Request) -> Any:
    try:
        data = _decode_claim(req.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return NOT_MINE  # Litestar words the 400 (it names the field at fault its own way)
    found = await claim_job(board, data, req.who, req.receive)
    return (204, None) if found is None else (200, found)


async def _heartbeat(board: BoardState, req: Request) -> Any:
    beat = await fenced(req.body, req.who, board, req.job_id, Heartbeat, cancelled_ok=True)
    reply = await lifecycle.heartbeat(board, req.job_id, beat, farmhand_token_id=req.who.token_id)
    return 200, reply


async def _complete(board: BoardState, req: Request) -> Any:
    done = await fenced(req.body, req.who, board, req.job_id, Complete)
    await complete_job(board, req.job_id, done)
    return 200, {"state": "succeeded"}


async def _fail(board: BoardState, req: Request) -> Any:
    failure = await fenced(req.body, req.who, board, req.job_id, Fail)
    return 200, {"state": await lifecycle.fail(board, req.job_id, failure)}


async def _put_output(board: BoardState, req: Request) -> Any:
    lease = req.header(b"x-lease-token")
    own_lease(req.who, req.job_id, lease)
    status = await receive_output(
        board, req.job_id, lease_token=lease, sha256=req.header(b"x-upload-sha256"),
        size=req.header(b"x-upload-size"), content_range=req.header(b"content-range"),
        chunks=req.chunks(),
    )  # fmt: skip
    return 200, status


# (method, last path segment) → (route, whether its JSON body is read first)
JOB_ROUTES: dict[tuple[str, str], tuple[Route, bool]] = {
    ("POST", "heartbeat"): (_heartbeat, True),
    ("POST", "complete"): (_complete, True),
    ("POST", "fail"): (_fail, True),
    ("PUT", "output"): (_put_output, False),
}


def _route(method: str, path: str) -> tuple[Route, bool, str] | None:
    if path == f"{PREFIX}claim":
        return (_claim, True, "") if method == "POST" else None
    if not path.startswith(JOBS):
        return None
    job_id, slash, action = path[len(JOBS) :].partition("/")
    if not job_id or not slash:
        return None
    found = JOB_ROUTES.get((method, action))
    return None if found is None else (found[0], found[1], job_id)


class FastLane:
    """ASGI: the hot farmhand routes answered here, everything else by ``app`` (Litestar)."""

    def __init__(self, app: ASGIApp, board: BoardState) -> None:
        self.app = app
        self.board = board

    def __getattr__(self, name: str) -> Any:  # ``state``, ``openapi_schema``…: the app's own
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _route(scope["method"], scope["path"]) if scope["type"] == "http" else None
        # (lifespan and anything not a hot route: Litestar's)
        if found is None:
            return await self.app(scope, receive, send)
        route, reads_body, job_id = found
        headers = {name: value for name, value in scope["headers"] if name in WANTED}
        req = Request(headers, job_id, receive)
        req.who = await self._principal(req)
        if req.who is None:
            return await self.app(scope, receive, send)
        if reads_body:
            length = req.header(b"content-length")
            if length is None or not length.isdigit() or int(length) > SMALL_BODY:
                return await self.app(scope, receive, send)  # Litestar enforces the limit
            try:
                req.body = b"".join([chunk async for chunk in req.chunks()])
            except ClientGone:
                return None
        try:
            answer = await route(self.board, req)
        except ClientGone:
            return None
        except BoardError as exc:
            return await _send(send, exc.status, {"status_code": exc.status, "detail": exc.message})
        except Exception as exc:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            detail = f"internal error: {type(exc).__name__}"
            return await _send(send, 500, {"status_code": 500, "detail": detail})
        if answer is NOT_MINE:
            return await self.app(scope, _replay(req.body, receive), send)
        status, body = answer
        await _send(send, status, body)

    async def _principal(self, req: Request) -> Principal | None:
        """The caller, when its bearer token is valid and may use these routes; None sends
        the request to Litestar, which refuses it with the right message."""
        if b"cookie" in req.headers and b"authorization" not in req.headers:
            return None  # the dashboard's session (and its CSRF check) is Litestar's
        scheme, _, token = (req.header(b"authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            who = await authenticate(self.board.db, token)
        except Exception:  # the database is unwell: Litestar meets it again and answers 500
            return None
        return who if who is not None and who.role in ROLES else None


def _replay(body: bytes, receive: Receive) -> Receive:
    """The request's channel with the body this lane already read put back in front."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send(send: Send, status: int, body: Any) -> None:
    if body is None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    data = _encode(body)
    headers = [*JSON_HEADERS, (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
