"""Live updates: one Server-Sent Events stream per open page.

The stream sends the page's snapshot (see ``snapshot.py``) at once and again whenever it changed:
it re-reads on every ``board.feed.any_change`` of this process, and at least every
``FALLBACK_S`` for changes made by another board process. Bursts (every heartbeat of a busy farm
fires the feed) are coalesced to one read per ``MIN_INTERVAL_S``. The session is re-checked on
every read: a revoked token or an ended session ends the stream with a ``signed-out`` event.
When the board goes away the browser's EventSource reconnects by itself and the first message is
a full snapshot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from litestar import Request, Response, get
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from board.api.auth import caller, requires
from board.dashboard.joblist import JobListQuery, job_list_snapshot, load_job_list
from board.dashboard.jobpage import job_snapshot, load_job_detail
from board.dashboard.roster import load_roster, roster_snapshot
from board.dashboard.session import DASHBOARD_ROLES, principal_check
from board.dashboard.snapshot import Snapshot
from board.domain.tokens import Principal
from board.errors import BadRequest, NotFound
from board.infra.notify import wait_armed
from board.state import BoardState

FALLBACK_S = 2.0
MIN_INTERVAL_S = 0.25
KEEPALIVE_S = 15.0
RETRY_MS = 1000  # how soon the browser reconnects after the board went away

Loader = Callable[[Principal], Awaitable[Snapshot]]


def snapshot_loader(board: BoardState, view: str, params: dict[str, str | None]) -> Loader:
    """What a page's stream sends, by view: ``jobs`` (with its tab/sort/page), ``job`` or
    ``farmhands``."""
    if view == "jobs":
        query = JobListQuery.parse(params.get("state"), params.get("sort"), params.get("page"))

        async def jobs(who: Principal) -> Snapshot:
            return job_list_snapshot(await load_job_list(board, who, query))

        return jobs
    if view == "job":
        job_id = params.get("job") or ""

        async def job(who: Principal) -> Snapshot:
            return job_snapshot(await load_job_detail(board, who, job_id, with_compilation=False))

        return job
    if view == "farmhands":

        async def farmhands(who: Principal) -> Snapshot:
            return roster_snapshot(await load_roster(board, who))

        return farmhands
    raise BadRequest(f"unknown view {view!r}; use jobs, job or farmhands")


async def _stream(
    board: BoardState, who_now: Callable[[], Awaitable[Principal | None]], load: Loader
) -> AsyncIterator[ServerSentEventMessage]:
    yield ServerSentEventMessage(comment="clipfarm live", retry=RETRY_MS)
    last = ""
    sent_at = time.monotonic()
    while True:
        changed = board.feed.any_change.arm()  # armed before reading: no change slips by
        current = await who_now()
        if current is None or current.role not in DASHBOARD_ROLES:
            yield ServerSentEventMessage(event="signed-out", data="{}")
            return
        try:
            data = (await load(current)).encode()
        except NotFound as exc:
            yield ServerSentEventMessage(event="gone", data=exc.message)
            return
        if data != last:
            last = data
            sent_at = time.monotonic()
            yield ServerSentEventMessage(event="snapshot", data=data)
        elif time.monotonic() - sent_at > KEEPALIVE_S:
            sent_at = time.monotonic()
            yield ServerSentEventMessage(event="ping", data="alive")
        if await wait_armed(changed, FALLBACK_S):
            await asyncio.sleep(MIN_INTERVAL_S)


@get("/dashboard/events", opt=requires(*DASHBOARD_ROLES), include_in_schema=False)
async def live_events(
    request: Request,
    board: BoardState,
    view: str = "jobs",
    tab: Annotated[str | None, Parameter(query="state")] = None,
    sort: str | None = None,
    page: str | None = None,
    job: str | None = None,
) -> Response:
    load = snapshot_loader(board, view, {"state": tab, "sort": sort, "page": page, "job": job})
    who: Principal = caller(request)
    stream = _stream(board, principal_check(board, request), load)
    return ServerSentEvent(
        board.streams.guard(who.token_id, who.name, stream),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@get("/dashboard/session", opt=requires(*DASHBOARD_ROLES), include_in_schema=False)
async def session_info(request: Request) -> dict:
    """Who the session is (the page's script asks after its stream was refused: 401 → sign in)."""
    who: Principal = caller(request)
    return {"name": who.name, "role": who.role}
