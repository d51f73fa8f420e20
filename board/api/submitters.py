"""Routes for submitters (and admins): jobs and media. Parse → service → shape the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import HeaderParameter, Parameter
from litestar.response import ServerSentEvent

from board import jobs as job_service
from board import lifecycle
from board.api.responses import LeaseHeader, RangeHeader, also, errors
from board.auth import Principal
from board.errors import BadRequest, NotFound
from board.http import body_chunks, ranged_file, requires
from board.media import get_media, media_for_farmhand, upload_media
from board.outputs import output_location
from board.state import BoardState
from board.views import media_view
from wire import (
    API,
    JOB_STATES,
    AttemptView,
    BatchResult,
    JobEvent,
    JobPage,
    JobView,
    MediaView,
    SubmitBatch,
    SubmitJob,
)


class JobHistory(msgspec.Struct):
    events: list[JobEvent]
    attempts: list[AttemptView]


class PriorityChange(msgspec.Struct, forbid_unknown_fields=True):
    priority: Annotated[int, msgspec.Meta(ge=-1000, le=1000)]


class JobsController(Controller):
    path = f"{API}/jobs"
    opt = requires("submitter")
    tags = ["jobs"]

    @post(
        "/",
        status_code=201,
        summary="Submit a render job",
        responses={
            **errors(400, 409, 413),
            **also(200, JobView, "An idempotent repeat: the job this key made before"),
        },
    )
    async def submit(
        self, request: Request, board: BoardState, data: SubmitJob
    ) -> Response[JobView]:
        view, created = await job_service.submit(board, request.user, data)
        return Response(view, status_code=201 if created else 200)

    @post(
        "/batch",
        status_code=200,
        summary="Submit many jobs, each answered on its own",
        responses=errors(400, 413),
    )
    async def submit_batch(
        self, request: Request, board: BoardState, data: SubmitBatch
    ) -> BatchResult:
        return await job_service.submit_batch(board, request.user, data.jobs)

    @get("/", summary="List jobs (yours; all for admins)", responses=errors(400))
    async def list_jobs(
        self,
        request: Request,
        board: BoardState,
        states: Annotated[list[str] | None, Parameter(query="state")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000_000)] = 0,
        sort: str = "-created",
    ) -> JobPage:
        for s in states or []:
            if s not in JOB_STATES:
                raise BadRequest(f"unknown state {s!r}; use one of {', '.join(JOB_STATES)}")
        return await job_service.list_jobs(
            board, request.user, state=states, limit=limit, offset=offset, sort=sort
        )

    @get("/{job_id:str}", summary="One job", responses=errors(400, 404))
    async def get_job(self, request: Request, board: BoardState, job_id: str) -> JobView:
        return await job_service.get_job(board, request.user, job_id)

    @get(
        "/{job_id:str}/history",
        summary="A job's events and attempts",
        responses=errors(400, 404),
    )
    async def history(self, request: Request, board: BoardState, job_id: str) -> JobHistory:
        events, tries = await job_service.job_history(board, request.user, job_id)
        return JobHistory(events=events, attempts=tries)

    @get(
        "/{job_id:str}/events",
        summary="Live job updates (Server-Sent Events)",
        media_type="text/event-stream",
        responses=errors(400, 404),
    )
    async def events(self, request: Request, board: BoardState, job_id: str) -> ServerSentEvent:
        who: Principal = request.user
        first = await job_service.get_job(board, who, job_id)
        return ServerSentEvent(_job_stream(board, who, job_id, first), event_type="job")

    @post(
        "/{job_id:str}/cancel",
        status_code=200,
        summary="Cancel a job",
        responses=errors(400, 404, 409),
    )
    async def cancel(self, request: Request, board: BoardState, job_id: str) -> JobView:
        await job_service.check_owner(board, request.user, job_id)
        await lifecycle.cancel(board, job_id, by=request.user.name)
        return await job_service.get_job(board, request.user, job_id)

    @post(
        "/{job_id:str}/retry",
        status_code=200,
        summary="Retry a failed or cancelled job",
        responses=errors(400, 404, 409),
    )
    async def retry(self, request: Request, board: BoardState, job_id: str) -> JobView:
        await job_service.check_owner(board, request.user, job_id)
        await lifecycle.retry(board, job_id, by=request.user.name)
        return await job_service.get_job(board, request.user, job_id)

    @post(
        "/{job_id:str}/priority",
        status_code=200,
        summary="Change a job's priority",
        responses=errors(400, 404, 409, 413),
    )
    async def priority(
        self, request: Request, board: BoardState, job_id: str, data: PriorityChange
    ) -> JobView:
        await job_service.check_owner(board, request.user, job_id)
        await lifecycle.set_priority(board, job_id, data.priority, by=request.user.name)
        return await job_service.get_job(board, request.user, job_id)

    @get(
        "/{job_id:str}/output",
        summary="The rendered video (HTTP Range supported)",
        media_type="video/mp4",
        responses={
            **errors(400, 404, 416),
            **also(206, bytes, "The byte range asked for", "video/mp4"),
        },
    )
    async def output(
        self, request: Request, board: BoardState, job_id: str, range_: RangeHeader = None
    ) -> Response:
        await job_service.check_owner(board, request.user, job_id)
        key, _, size = await output_location(board, job_id)
        if not key:
            raise NotFound(f"job {job_id} has no output (yet)")
        return ranged_file(
            board,
            key,
            size,
            range_,
            media_type="video/mp4",
            filename=f"{job_id}.mp4",
        )

    @get(
        "/{job_id:str}/thumbnail",
        summary="A still of the rendered video",
        media_type="image/jpeg",
        responses=errors(400, 404),
    )
    async def thumbnail(self, request: Request, board: BoardState, job_id: str) -> Response:
        await job_service.check_owner(board, request.user, job_id)
        _, thumb, _ = await output_location(board, job_id)
        if not thumb or not board.storage.exists(thumb):
            raise NotFound(f"job {job_id} has no thumbnail")
        return ranged_file(board, thumb, board.storage.size(thumb), None, media_type="image/jpeg")


async def _job_stream(
    board: BoardState, who: Principal, job_id: str, first: JobView
) -> AsyncIterator[str]:
    """Send the job now and at every change; a change made by another board process is seen by
    the periodic re-read. Ends after a final state."""
    last = msgspec.json.encode(first)
    yield last.decode()
    while first.state not in ("succeeded", "failed", "cancelled"):
        await board.feed.wait_job(job_id, 2.0)
        try:
            first = await job_service.get_job(board, who, job_id)
        except NotFound:
            return
        now = msgspec.json.encode(first)
        if now != last:
            last = now
            yield now.decode()
    await asyncio.sleep(0)


class MediaController(Controller):
    path = f"{API}/media"
    tags = ["media"]

    @post(
        "/",
        status_code=201,
        opt=requires("submitter"),
        request_max_body_size=None,
        summary="Upload media (raw body; ?filename=…)",
        responses={
            **errors(400, 413, 507),
            **also(200, MediaView, "The same bytes were uploaded before: that media"),
        },
    )
    async def upload(
        self,
        request: Request,
        board: BoardState,
        filename: str | None = None,
        x_filename: Annotated[str | None, HeaderParameter(name="x-filename")] = None,
    ) -> Response[MediaView]:
        name = filename or x_filename
        view, created = await upload_media(
            board,
            request.user,
            body_chunks(request),
            filename=name,
            declared_size=request.content_length,
        )
        return Response(view, status_code=201 if created else 200)

    @get(
        "/{media_id:str}",
        opt=requires("submitter"),
        summary="One media's details",
        responses=errors(400, 404),
    )
    async def describe(self, request: Request, board: BoardState, media_id: str) -> MediaView:
        return media_view(await get_media(board, request.user, media_id))

    @get(
        "/{media_id:str}/content",
        opt=requires("submitter", "farmhand"),
        summary="Download media (owner, or the farmhand holding a job that uses it)",
        media_type="application/octet-stream",
        responses={
            **errors(400, 404, 416),
            **also(206, bytes, "The byte range asked for", "application/octet-stream"),
        },
    )
    async def content(
        self,
        request: Request,
        board: BoardState,
        media_id: str,
        lease: LeaseHeader = None,
        range_: RangeHeader = None,
    ) -> Response:
        who: Principal = request.user
        if who.role == "farmhand":
            if lease and not lifecycle.lease_issued_to(lease, who.token_id):
                raise NotFound(f"no media {media_id} for the job this lease holds")
            row = await media_for_farmhand(board, media_id, lease)
        else:
            row = await get_media(board, who, media_id)
        return ranged_file(
            board,
            row.storage_key,
            row.size,
            range_,
            media_type="application/octet-stream",
            filename=row.filename,
        )
