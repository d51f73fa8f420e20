"""The board's one app factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from board.api.admin import AdminController
from board.api.farmhands import FarmhandController
from board.api.fastlane import FastLane
from board.api.ops import ROUTES as OPS_ROUTES
from board.api.submitters import JobsController, MediaController
from board.config import BoardConfig, load_config
from board.dashboard.routes import ROUTES as DASHBOARD_ROUTES
from board.db import Database
from board.errors import BoardError
from board.http import TokenAuth, board_error_handler, http_error_handler, internal_error_handler
from board.reaper import run_reaper
from board.siblings import Siblings, folder_for
from board.state import BoardState
from board.storage import LocalStorage

log = logging.getLogger("board")
OPEN_PATHS = ["^/health$", "^/ready$", "^/metrics$", "^/schema"]


def serving_app(config: BoardConfig | None = None) -> FastLane:
    """What ``board serve`` runs: the board, its hot farmhand routes answered by the fast lane
    in front of Litestar (``board.api.fastlane``)."""
    app = create_app(config)
    return FastLane(app, app.state.board)


def worker_app() -> FastLane:
    """The app of one worker of ``board serve --workers N``: uvicorn calls this in each worker
    process, and ``board serve`` put the configuration in the environment it inherits."""
    app = serving_app(load_config())
    # What start-up built lives as long as the process: keep it out of the collector's full
    # passes, which walked it again every ~15 s under load (a full pass measured 82-97 ms in
    # the fleet benchmark, a tail on whatever request it landed in; 34-40 ms frozen).
    gc.freeze()
    return app


def create_app(
    config: BoardConfig | None = None,
    *,
    extra_routes: list | None = None,
    open_paths: list[str] | None = None,
) -> Litestar:
    """Build the board. The database schema must exist (``board migrate``); the app never creates
    tables itself."""
    config = config or load_config()
    board = BoardState(
        config=config,
        db=Database(config.database_url, pool_size=config.db_pool_size),
        storage=LocalStorage(config.data_dir / "files"),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        siblings = None
        if config.workers > 1:  # one of ``board serve --workers N``: pass wake-ups to the others
            siblings = Siblings(folder_for(config.data_dir), board.feed)
            siblings.start()
        reaper = asyncio.create_task(run_reaper(board), name="lease-reaper")
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            if siblings is not None:
                siblings.close()
            await board.db.dispose()

    def provide_board() -> BoardState:
        return board

    return Litestar(
        route_handlers=[
            *OPS_ROUTES,
            JobsController,
            MediaController,
            FarmhandController,
            AdminController,
            *DASHBOARD_ROUTES,
            *(extra_routes or []),
        ],
        dependencies={"board": Provide(provide_board, use_cache=True, sync_to_thread=False)},
        middleware=[DefineMiddleware(TokenAuth, exclude=OPEN_PATHS + (open_paths or []))],
        exception_handlers={
            BoardError: board_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        openapi_config=OpenAPIConfig(
            title="clipfarm board",
            version="1.0.0",
            path="/schema",
            security=[{"bearer": []}],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="A token from `board token create` (admin, submitter or "
                        "farmhand)",
                    )
                }
            ),
        ),
        lifespan=[lifespan],
        request_max_body_size=config.max_json_bytes,
        state=State({"board": board}),
    )
