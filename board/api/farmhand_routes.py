"""Routes for farmhands: claim, the job they hold (context, heartbeat, upload, complete, fail,
release) and their status. Parse → service → answer; the services fence every call by its lease.

A stale ``lease_token`` gets 409 before anything else in the body is looked at (docs/
architecture.md, "Job lifecycle"). A body that validates is fenced by its transition, in the
transition's own transaction; one that does not is checked here first (``stale_lease_first``),
so a zombie with a malformed body still learns that it lost the job rather than what is wrong
with its body.
"""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.types import Receive

import wire
from board.api.auth import caller, requires
from board.api.http import body_chunks, ranged_file
from board.api.openapi import (
    ContentRangeHeader,
    LeaseHeader,
    RangeHeader,
    Sha256Header,
    SizeHeader,
    also,
    errors,
    streamed_body,
    typed,
)
from board.domain import claims, lifecycle
from board.domain.direct_outputs import begin_output_upload
from board.domain.farmhands import report_status
from board.domain.jobs import job_context
from board.domain.outputs import (
    THUMBNAIL_MAX,
    complete_job,
    piece_for_join,
    receive_output,
    receive_thumbnail,
    upload_status,
)
from board.errors import BadRequest
from board.state import BoardState
from wire.routes import (
    CLAIM,
    FARMHAND_STATUS,
    JOB_COMPLETE,
    JOB_CONTEXT,
    JOB_FAIL,
    JOB_HEARTBEAT,
    JOB_PIECE,
    JOB_RELEASE,
    JOB_UPLOAD,
    JOB_UPLOAD_MULTIPART,
    JOB_UPLOAD_THUMBNAIL,
)

SMALL_BODY = 256 * 1024


async def stale_lease_first(request: Request) -> None:
    """For a route whose JSON body carries the lease (``opt["lease_body"]``): when the body does
    not validate, answer 409 if its lease is stale, before Litestar answers 400 about the body."""
    body_type = request.route_handler.opt.get("lease_body")
    if body_type is None:
        return
    raw = await request.body()
    try:
        msgspec.json.decode(raw, type=body_type)
        return  # valid: the transition fences the lease in its own transaction
    except RecursionError:
        return  # nested too deeply to hold a readable lease: the body's 400 (board.api.http)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    try:
        loose = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return
    lease = loose.get("lease_token") if isinstance(loose, dict) else None
    if isinstance(lease, str) and lease:
        board: BoardState = request.app.state.board
        await lifecycle.fence(
            board,
            caller(request),
            request.path_params["job_id"],
            lease,
            cancelled_ok=request.route_handler.opt.get("cancelled_ok", False),
        )


async def _watch_hang_up(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (a long-poll whose farmhand went away): after
    the body, the only message left on the request's channel is the disconnect."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


class FarmhandController(Controller):
    path = "/"
    opt = requires("farmhand")
    tags = ["farmhand"]
    request_max_body_size = SMALL_BODY
    before_request = stale_lease_first

    @post(
        typed(CLAIM),
        status_code=200,
        summary="Claim one job (long-polls up to wait_s)",
        responses={**errors(400, 413), **also(204, None, "No job for this farmhand now")},
    )
    async def claim(
        self, request: Request, board: BoardState, data: wire.ClaimRequest
    ) -> Response[wire.Claim | None]:
        gone = asyncio.Event()
        # only a claim that waits can outlive its farmhand's connection
        watcher = (
            asyncio.create_task(_watch_hang_up(request.receive, gone)) if data.wait_s > 0 else None
        )
        try:
            found = await claims.claim(board, data, caller(request), gone=gone)
        finally:
            if watcher is not None:
                watcher.cancel()
        if found is None:
            return Response(None, status_code=204)
        return Response(found, status_code=200)

    @post(
        typed(FARMHAND_STATUS),
        status_code=200,
        summary="Say the farmhand is alive and whether its owner paused it",
        responses=errors(400, 413),
    )
    async def status(
        self, request: Request, board: BoardState, data: wire.FarmhandStatus
    ) -> wire.FarmhandStatusReply:
        return await report_status(board, data, caller(request))

    @get(
        typed(JOB_CONTEXT),
        summary="Everything needed to render the held job",
        responses=errors(400, 404, 409),
    )
    async def context(
        self, request: Request, board: BoardState, job_id: str, lease: LeaseHeader = None
    ) -> wire.JobContext:
        if not lease:
            raise BadRequest(f"{wire.LEASE_HEADER} header missing")
        return await job_context(board, job_id, lease, caller(request))

    @post(
        typed(JOB_HEARTBEAT),
        status_code=200,
        opt={"lease_body": wire.Heartbeat, "cancelled_ok": True},
        summary="Extend the lease, report progress",
        responses=errors(400, 409, 413),
    )
    async def heartbeat(
        self, request: Request, board: BoardState, job_id: str, data: wire.Heartbeat
    ) -> wire.HeartbeatReply:
        return await lifecycle.heartbeat(board, job_id, data, caller(request))

    @put(
        typed(JOB_UPLOAD),
        status_code=200,
        request_max_body_size=None,
        operation_class=streamed_body(
            "The rendered MP4 (or its rest from Content-Range's START)",
            "application/octet-stream",
            "video/mp4",
        ),
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
    ) -> wire.UploadStatus:
        return await receive_output(
            board,
            caller(request),
            job_id,
            lease_token=lease,
            sha256=sha256,
            size=size,
            content_range=content_range,
            chunks=body_chunks(request),
        )

    @get(
        typed(JOB_UPLOAD),
        summary="How much of the output upload arrived",
        responses=errors(400, 409),
    )
    async def output_status(
        self, request: Request, board: BoardState, job_id: str, lease: LeaseHeader = None
    ) -> wire.UploadStatus:
        return await upload_status(board, caller(request), job_id, lease)

    @post(
        typed(JOB_UPLOAD_MULTIPART),
        status_code=200,
        summary="Begin or resume sending the output straight to object storage (presigned parts)",
        responses=errors(400, 409, 413, 503),
    )
    async def output_multipart(
        self,
        request: Request,
        board: BoardState,
        job_id: str,
        data: wire.DirectUploadStart,
        lease: LeaseHeader = None,
    ) -> wire.DirectUpload:
        return await begin_output_upload(board, caller(request), job_id, lease, data)

    @put(
        typed(JOB_UPLOAD_THUMBNAIL),
        status_code=204,
        request_max_body_size=THUMBNAIL_MAX + 1024 * 1024,
        operation_class=streamed_body("A still of the output", "image/jpeg", "image/png"),
        summary="Upload the output's thumbnail (JPEG or PNG)",
        responses=errors(400, 409, 413, 507),
    )
    async def put_thumbnail(
        self, request: Request, board: BoardState, job_id: str, lease: LeaseHeader = None
    ) -> None:
        await receive_thumbnail(board, caller(request), job_id, lease, body_chunks(request))

    @get(
        typed(JOB_PIECE),
        summary="Download a piece of the split job the held join joins (HTTP Range supported)",
        media_type="application/octet-stream",
        responses={
            **errors(400, 404, 409, 416),
            **also(206, bytes, "The byte range asked for", "application/octet-stream"),
        },
    )
    async def piece(
        self,
        request: Request,
        board: BoardState,
        job_id: str,
        piece_id: str,
        lease: LeaseHeader = None,
        range_: RangeHeader = None,
    ) -> Response:
        key, size = await piece_for_join(board, caller(request), job_id, lease, piece_id)
        return ranged_file(
            board, key, size, range_, media_type="application/octet-stream",
            filename=f"{piece_id}.mp4",
        )  # fmt: skip

    @post(
        typed(JOB_COMPLETE),
        status_code=200,
        opt={"lease_body": wire.Complete},
        summary="Report the job done (after its output was uploaded)",
        responses=errors(400, 409, 413),
    )
    async def complete(
        self, request: Request, board: BoardState, job_id: str, data: wire.Complete
    ) -> wire.JobMoved:
        await complete_job(board, caller(request), job_id, data)
        return wire.JobMoved(state="succeeded")

    @post(
        typed(JOB_FAIL),
        status_code=200,
        opt={"lease_body": wire.Fail},
        summary="Report a failed attempt",
        responses=errors(400, 409, 413),
    )
    async def fail(
        self, request: Request, board: BoardState, job_id: str, data: wire.Fail
    ) -> wire.JobMoved:
        return wire.JobMoved(state=await lifecycle.fail(board, job_id, data, caller(request)))

    @post(
        typed(JOB_RELEASE),
        status_code=200,
        opt={"lease_body": wire.Release},
        summary="Give the job back (shutting down, or the owner came back)",
        responses=errors(400, 409, 413),
    )
    async def release(
        self, request: Request, board: BoardState, job_id: str, data: wire.Release
    ) -> wire.JobMoved:
        await lifecycle.release(board, job_id, data, caller(request))
        return wire.JobMoved(state="queued")
