"""The dashboard's pages: jobs (``/``), one job (``/jobs/{id}``) and the farmhands
(``/farmhands``). Each loads what it shows through the same functions its live updates use."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.params import Parameter

from board.api.auth import caller, requires
from board.dashboard.csrf import csrf_token
from board.dashboard.joblist import JobListQuery, load_job_list
from board.dashboard.jobpage import load_job_detail
from board.dashboard.render import html_page, render
from board.dashboard.roster import load_roster
from board.dashboard.session import DASHBOARD_ROLES, error_page, session_token, to_signin
from board.errors import BoardError
from board.state import BoardState


def _page(request: Request, template: str, **context) -> Response:
    return html_page(
        render(
            template,
            who=caller(request),
            csrf=csrf_token(session_token(request)),
            path=request.url.path,
            **context,
        )
    )


class DashboardPages(Controller):
    """Pages for a browser: no session → the sign-in page; errors → an error page."""

    opt = requires(*DASHBOARD_ROLES)
    include_in_schema = False
    exception_handlers = {
        401: to_signin,
        HTTPException: error_page,
        BoardError: error_page,
    }

    @get("/")
    async def jobs(
        self,
        request: Request,
        board: BoardState,
        tab: Annotated[str | None, Parameter(query="state")] = None,
        sort: str | None = None,
        page: str | None = None,
    ) -> Response:
        query = JobListQuery.parse(tab, sort, page)
        view = await load_job_list(board, caller(request), query)
        return _page(request, "jobs.html", view=view, stream=query.stream_params())

    @get("/jobs/{job_id:str}")
    async def job(self, request: Request, board: BoardState, job_id: str) -> Response:
        detail = await load_job_detail(board, caller(request), job_id)
        stream = f"view=job&job={detail.job.id}"
        return _page(request, "job.html", detail=detail, stream=stream)

    @get("/farmhands")
    async def farmhands(self, request: Request, board: BoardState) -> Response:
        roster = await load_roster(board, caller(request))
        return _page(request, "farmhands.html", roster=roster, stream="view=farmhands")
