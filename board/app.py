"""The board's one app factory: Litestar, its routes, the token middleware, the reaper.

What ``board serve`` runs is ``create_app()``; there is one door in, Litestar's, so auth, role
checks, body limits and error bodies exist once (docs/architecture.md, "The board").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from board.api.admin_routes import AdminController
from board.api.auth import OPEN_PATHS, TokenAuth
from board.api.farmhand_routes import FarmhandController
from board.api.http import ERROR_HANDLERS
from board.api.job_routes import JobsController
from board.api.media_routes import MediaController
from board.api.ops_routes import ROUTES as OPS_ROUTES
from board.config import BoardConfig, load_config
from board.dashboard.routes import ROUTES as DASHBOARD_ROUTES
from board.domain.reaper import run_reaper
from board.infra.db import Database
from board.infra.storage import open_storage
from board.state import BoardState
from wire.routes import SCHEMA


def create_app(
    config: BoardConfig | None = None,
    *,
    extra_routes: list | None = None,
    open_paths: list[str] | None = None,
) -> Litestar:
    """Build the board. The database schema must exist (``board migrate``; ``board serve`` runs
    it first): the app never creates tables itself."""
    config = config or load_config()
    board = BoardState(
        config=config,
        db=Database(config.database_url, pool_size=config.db_pool_size),
        storage=open_storage(config),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if board.storage.direct:  # a wrong bucket or key fails the start, not the first upload
            await asyncio.to_thread(board.storage.check)
        reaper = asyncio.create_task(run_reaper(board), name="lease-reaper")
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
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
        exception_handlers=ERROR_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="clipfarm board",
            version="1.0.0",
            path=SCHEMA,
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
