"""Everything the dashboard mounts on the board: pages, sign-in, the live stream, its static
files. Public (no session needed): the sign-in routes and the static files."""

from __future__ import annotations

from litestar.static_files import create_static_files_router

from board.dashboard.live import live_events, session_info
from board.dashboard.pages import DashboardPages
from board.dashboard.render import STATIC, STATIC_URL
from board.dashboard.session import PUBLIC, SESSION_ROUTES

static_files = create_static_files_router(
    path=STATIC_URL,
    directories=[STATIC],
    name="dashboard-static",
    opt=PUBLIC,
    include_in_schema=False,
)

ROUTES = [DashboardPages, *SESSION_ROUTES, live_events, session_info, static_files]
