"""Routes for farmhands: claim, the job they hold (context, heartbeat, upload, complete, fail,
release) and their status. Every call about a job is fenced by its lease token: a stale one gets
409 before anything else in the body is looked at."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.types import Receive

from board import claims, lifecycle
from board.api.responses import (
    ContentRangeHeader,
    LeaseHeader,
    Sha256Header,
    SizeHeader,
    also,
    errors,
)
from board.auth import Principal
from board.errors import BadRequest, LeaseLost
from board.farm import report_status
from board.http import body_chunks, requires
from board.jobs import job_context
from board.outputs import complete_job, receive_output, receive_thumbnail, upload_status
from board.state import BoardState
from wire import (
    API,
    LEASE_HEADER,
    Claim,
    ClaimRequest,
    Complete,
    Fail,
    FarmhandStatus,
    FarmhandStatusReply,
    Heartbeat,
    HeartbeatReply,
    JobContext,
    Release,
    UploadStatus,
)

SMALL_BODY = 256 * 1024


def own_lease(who: Principal, job_id: str, lease: str | None) -> None:
    """409 when a farmhand presents a lease issued to another farmhand token (a leaked lease is
    no key to someone else's job)."""
    if lease and who.role == "farmhand" and not lifecycle.lease_issued_to(lease, who.token_id):
        raise LeaseLost(job_id, "that lease was issued to another farmhand token")


async def fenced(
    raw: bytes,
    who: Principal,
    board: BoardState,
    job_id: str,
    type_: type,
    *,
    cancelled_ok: bool = False,
) -> Any:
    """Decode a lease-carrying JSON body: the lease is checked (409 when stale) before the rest of
    the body is validated (400 with the field at fault). ``cancelled_ok`` lets a lease whose job
    was cancelled through, for the heartbeat that tells the farmhand to stop."""
    try:
        loose = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(loose, dict) or not isinstance(loose.get("lease_token"), str):
        raise BadRequest("body must be a JSON object with a string `lease_token`")
    own_lease(who, job_id, loose["lease_token"])
    try:
        return msgspec.convert(loose, type_)
    except msgspec.ValidationError as exc:
        # A stale lease is answered first; a valid body's lease is checked by the transition
        # itself, so the hot path reads the job once.
        lease = loose["lease_token"]
        await board.db.query(
            lambda conn: lifecycle.check_lease(conn, job_id, lease, cancelled_ok=cancelled_ok)
        )
        raise BadRequest(f"invalid {type_.__name__.lower()} body: {exc}") from None


async def fenced_body(
    request: Request, board: BoardState, job_id: str, type_: type, *, cancelled_ok: bool = False
) -> Any:
    return await fenced(
        await request.body(), request.user, board, job_id, type_, cancelled_ok=cancelled_ok
    )


async def claim_job(
    board: BoardState, data: ClaimRequest, who: Principal, receive: Receive
) -> Claim | None:
    """The claim route's work, for Litestar's route and the fast lane alike. ``receive`` is
    the request's ASGI channel, listened on while a long-poll waits."""
    gone = asyncio.Event()
    # only a claim that waits can outlive its farmhand's connection
    watcher = asyncio.create_task(_watch_hang_up(receive, gone)) if data.wait_s > 0 else None
    try:
        return await claims.claim(board, data, token_id=who.token_id, gone=gone)
    finally:
        if watcher is not None:
            watcher.cancel()


async def _watch_hang_up(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (a long-poll whose farmhand went away)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


class FarmhandController(Controller):
    path = f"{API}/farmhand"
    opt = requires("farmhand")
    tags = ["farmhand"]
    request_max_body_size = SMALL_BODY

    @post(
        "/claim",
        status_code=200,
        summary="Claim one job (long-polls up to wait_s)",
        responses={**errors(400, 413), **also(204, None, "No job for this farmhand now")},
    )
    async def claim(
        self, request: Request, board: BoardState, data: ClaimRequest
    ) -> Response[Claim | None]:
        found = await claim_job(board, data, request.user, request.receive)
        if found is None:
            return Response(None, status_code=204)
        return Response(found, status_code=200)

    @post(
        "/status",
        status_code=200,
        summary="Say the farmhand is alive and whether its owner paused it",
        responses=errors(400, 413),
    )
    async def status(
        self, request: Request, board: BoardState, data: FarmhandStatus
    ) -> FarmhandStatusReply:
        return await report_status(board, data, token_id=request.user.token_id)

    @get(
        "/jobs/{job_id:str}/context",
        summary="Everything needed to render the held job",
        responses=errors(400, 409),
    )
    async def context(
        self, request: Request, board: BoardState, job_id: str, lease: LeaseHeader = None
    ) -> JobContext:
        if not lease:
            raise BadRequest(f"{LEASE_HEADER} header missing")
        own_lease(request.user, job_id, lease)
        return await job_context(board, job_id, lease)

    @post(
        "/jobs/{job_id:str}/heartbeat",
        status_code=200,
        summary="Extend the lease, report progress",
        responses=errors(400, 409, 413),
    )
    async def heartbeat(self, request: Request, board: BoardState, job_id: str) -> HeartbeatReply:
        beat = await fenced_body(request, board, job_id, Heartbeat, cancelled_ok=True)
        return await lifecycle.heartbeat(
            board, job_id, beat, farmhand_token_id=request.user.token_id
        )

    @put(
        "/jobs/{job_id:str}/output",
        status_code=200,
        request_max_body_size=None,
        summary="Upload the rendered file (resumable: Content-Range)",
        responses=errors(400, 409, 413, 416, 507),
    )
    async def put_output(
        self,
        request: Request,
        board: BoardState,
        job_id: str,
        lease: LeaseHeader = None,
        sha256: Sha256Header = None,
        size: SizeHeader = None,
        content_range: ContentRangeHeader = None,
    ) -> UploadStatus:
        own_lease(request.user, job_id, lease)
        return await receive_output(
            board, job_id, lease_token=lease, sha256=sha256, size=size,
            content_range=content_range, chunks=body_chunks(request),
        )  # fmt: skip

    @get(
        "/jobs/{job_id:str}/output",
        summary="How much of the output upload arrived",
        responses=errors(400, 409),
    )
    async def output_status(
        self, request: Request, board: BoardState, job_id: str, lease: LeaseHeader = None
    ) -> UploadStatus:
        own_lease(request.user, job_id, lease)
        return await upload_status(board, job_id, lease)

    @put(
        "/jobs/{job_id:str}/thumbnail",
        status_code=204,
        request_max_body_size=6 * 1024 * 1024,
        summary="Upload the output's thumbnail (JPEG)",
        responses=errors(400, 409, 413, 507),
    )
    async def put_thumbnail(
        self, request: Request, board: BoardState, job_id: str, lease: LeaseHeader = None
    ) -> None:
        own_lease(request.user, job_id, lease)
        await receive_thumbnail(board, job_id, lease, body_chunks(request))

    @post(
        "/jobs/{job_id:str}/complete",
        status_code=200,
        summary="Report the job done",
        responses=errors(400, 409, 413),
    )
    async def complete(self, request: Request, board: BoardState, job_id: str) -> dict:
        done = await fenced_body(request, board, job_id, Complete)
        await complete_job(board, job_id, done)
        return {"state": "succeeded"}

    @post(
        "/jobs/{job_id:str}/fail",
        status_code=200,
        summary="Report a failed attempt",
        responses=errors(400, 409, 413),
    )
    async def fail(self, request: Request, board: BoardState, job_id: str) -> dict:
        failure = await fenced_body(request, board, job_id, Fail)
        return {"state": await lifecycle.fail(board, job_id, failure)}

    @post(
        "/jobs/{job_id:str}/release",
        status_code=200,
        summary="Give the job back (shutting down)",
        responses=errors(400, 409, 413),
    )
    async def release(self, request: Request, board: BoardState, job_id: str) -> dict:
        rel = await fenced_body(request, board, job_id, Release)
        await lifecycle.release(board, job_id, rel)
        return {"state": "queued"}
