"""Routes for submitters (and admins) about jobs: submit, read, follow, cancel, retry, download,
delete. Parse → service → answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import Parameter
from litestar.response import Redirect, ServerSentEvent

from board.api.auth import caller, requires
from board.api.http import ranged_file
from board.api.openapi import RangeHeader, also, errors, typed
from board.domain import jobs as job_service
from board.domain import lifecycle
from board.domain.deletions import check_sources_present, delete_job, delete_output
from board.domain.links import download_url
from board.domain.outputs import output_location
from board.domain.tokens import Principal, still_valid
from board.errors import BadRequest, NotFound
from board.state import BoardState
from wire import (
    FINAL_STATES,
    JOB_STATES,
    AttemptView,
    BatchResult,
    JobEvent,
    JobPage,
    JobView,
    SubmitBatch,
    SubmitJob,
)
from wire.routes import (
    JOB,
    JOB_CANCEL,
    JOB_EVENTS,
    JOB_HISTORY,
    JOB_OUTPUT,
    JOB_PRIORITY,
    JOB_RETRY,
    JOB_THUMBNAIL,
    JOBS,
    JOBS_BATCH,
)


class JobHistory(msgspec.Struct):
    events: list[JobEvent]
    attempts: list[AttemptView]


class PriorityChange(msgspec.Struct, forbid_unknown_fields=True):
    priority: Annotated[int, msgspec.Meta(ge=-1000, le=1000)]


class JobsController(Controller):
    path = "/"
    opt = requires("submitter")
    tags = ["jobs"]

    @post(
        typed(JOBS),
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
        view, created = await job_service.submit(board, caller(request), data)
        return Response(view, status_code=201 if created else 200)

    @post(
        typed(JOBS_BATCH),
        status_code=200,
        summary="Submit many jobs, each answered on its own",
        responses=errors(400, 413),
    )
    async def submit_batch(
        self, request: Request, board: BoardState, data: SubmitBatch
    ) -> BatchResult:
        return await job_service.submit_batch(board, caller(request), data.jobs)

    @get(typed(JOBS), summary="List jobs (yours; all for admins)", responses=errors(400))
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
            board, caller(request), state=states, limit=limit, offset=offset, sort=sort
        )

    @get(typed(JOB), summary="One job", responses=errors(400, 404))
    async def get_job(self, request: Request, board: BoardState, job_id: str) -> JobView:
        return await job_service.get_job(board, caller(request), job_id)

    @get(
        typed(JOB_HISTORY),
        summary="A job's events and attempts",
        responses=errors(400, 404),
    )
    async def history(self, request: Request, board: BoardState, job_id: str) -> JobHistory:
        events, tries = await job_service.job_history(board, caller(request), job_id)
        return JobHistory(events=events, attempts=tries)

    @get(
        typed(JOB_EVENTS),
        summary="Live job updates (Server-Sent Events)",
        media_type="text/event-stream",
        responses=errors(400, 404, 429),
    )
    async def events(self, request: Request, board: BoardState, job_id: str) -> ServerSentEvent:
        who: Principal = caller(request)
        first = await job_service.get_job(board, who, job_id)
        stream = board.streams.guard(who.token_id, who.name, _job_stream(board, who, job_id, first))
        return ServerSentEvent(stream, event_type="job")

    @post(
        typed(JOB_CANCEL),
        status_code=200,
        summary="Cancel a job",
        responses=errors(400, 404, 409),
    )
    async def cancel(self, request: Request, board: BoardState, job_id: str) -> JobView:
        await job_service.check_owner(board, caller(request), job_id)
        await lifecycle.cancel(board, job_id, by=caller(request).name)
        return await job_service.get_job(board, caller(request), job_id)

    @post(
        typed(JOB_RETRY),
        status_code=200,
        summary="Retry a failed or cancelled job",
        responses=errors(400, 404, 409),
    )
    async def retry(self, request: Request, board: BoardState, job_id: str) -> JobView:
        await job_service.check_owner(board, caller(request), job_id)
        await check_sources_present(board, job_id)
        await lifecycle.retry(board, job_id, by=caller(request).name)
        return await job_service.get_job(board, caller(request), job_id)

    @post(
        typed(JOB_PRIORITY),
        status_code=200,
        summary="Change a job's priority",
        responses=errors(400, 404, 409, 413),
    )
    async def priority(
        self, request: Request, board: BoardState, job_id: str, data: PriorityChange
    ) -> JobView:
        await job_service.check_owner(board, caller(request), job_id)
        await lifecycle.set_priority(board, job_id, data.priority, by=caller(request).name)
        return await job_service.get_job(board, caller(request), job_id)

    @get(
        typed(JOB_OUTPUT),
        summary="The rendered video (HTTP Range supported)",
        media_type="video/mp4",
        responses={
            **errors(400, 404, 416),
            **also(206, bytes, "The byte range asked for", "video/mp4"),
            **also(307, None, "In object storage: a presigned URL to download it from"),
        },
    )
    async def output(
        self, request: Request, board: BoardState, job_id: str, range_: RangeHeader = None
    ) -> Response:
        await job_service.check_owner(board, caller(request), job_id)
        key, _, size = await output_location(board, job_id)
        if not key:
            raise NotFound(f"job {job_id} has no output (yet)")
        elsewhere = download_url(board, key, f"{job_id}.mp4")
        if elsewhere is not None:
            return Redirect(elsewhere, status_code=307, media_type="text/plain")
        return ranged_file(
            board,
            key,
            size,
            range_,
            media_type="video/mp4",
            filename=f"{job_id}.mp4",
        )

    @delete(
        typed(JOB_OUTPUT),
        summary="Delete the rendered video and its thumbnail (the job stays succeeded)",
        responses=errors(400, 404),
    )
    async def remove_output(self, request: Request, board: BoardState, job_id: str) -> None:
        await delete_output(board, caller(request), job_id)

    @delete(
        typed(JOB),
        summary="Delete a finished job, its history and its output (cancel a live one first)",
        responses=errors(400, 404, 409),
    )
    async def remove_job(self, request: Request, board: BoardState, job_id: str) -> None:
        await delete_job(board, caller(request), job_id)

    @get(
        typed(JOB_THUMBNAIL),
        summary="A still of the rendered video",
        media_type="image/jpeg",
        responses={
            **errors(400, 404),
            **also(307, None, "In object storage: a presigned URL to download it from"),
        },
    )
    async def thumbnail(self, request: Request, board: BoardState, job_id: str) -> Response:
        await job_service.check_owner(board, caller(request), job_id)
        _, thumb, _ = await output_location(board, job_id)
        elsewhere = download_url(board, thumb) if thumb else None
        if elsewhere is not None:
            return Redirect(elsewhere, status_code=307, media_type="text/plain")
        if not thumb or not board.storage.exists(thumb):
            raise NotFound(f"job {job_id} has no thumbnail")
        return ranged_file(board, thumb, board.storage.size(thumb), None, media_type="image/jpeg")


# How often a job's event stream reads the job even without a change here (one made by another
# board process) and checks its token is still good: a revoke ends the stream within this.
RECHECK_S = 2.0


async def _job_stream(
    board: BoardState, who: Principal, job_id: str, first: JobView
) -> AsyncIterator[str]:
    """Send the job now and at every change; a change made by another board process is seen by
    the periodic re-read. Ends after a final state, or when the caller's token is revoked."""
    last = msgspec.json.encode(first)
    yield last.decode()
    while first.state not in FINAL_STATES:
        await board.feed.wait_job(job_id, RECHECK_S)
        if not await still_valid(board.db, who):
            return  # the token was revoked: the stream ends with it
        try:
            first = await job_service.get_job(board, who, job_id)
        except NotFound:
            return
        now = msgspec.json.encode(first)
        if now != last:
            last = now
            yield now.decode()
    await asyncio.sleep(0)
