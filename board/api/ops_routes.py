"""Operations routes: no token needed. /health (the process answers), /ready (the database
answers), /metrics (Prometheus text)."""

from __future__ import annotations

import time

from litestar import Response, get
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from board.api.openapi import errors
from board.infra.models import farmhands, jobs
from board.state import BoardState
from wire import JOB_STATES
from wire.routes import HEALTH, METRICS, READY

OPEN = {"exclude_from_auth": True}
NO_TOKEN: list = [{}]  # the schema's way to say "no token needed"


@get(HEALTH, opt=OPEN, security=NO_TOKEN, tags=["ops"], summary="The board process is up")
async def health() -> dict:
    return {"status": "ok"}


@get(
    READY,
    opt=OPEN,
    security=NO_TOKEN,
    tags=["ops"],
    summary="The board can reach its database",
    responses=errors(503, guarded=False),
)
async def ready(board: BoardState) -> Response:
    try:
        await board.db.ping()
    except Exception as exc:  # any failure to reach the database means "not ready"
        return Response(
            {"status": "unavailable", "detail": f"database: {type(exc).__name__}"}, status_code=503
        )
    return Response({"status": "ready"}, status_code=200)


@get(
    METRICS,
    opt=OPEN,
    security=NO_TOKEN,
    tags=["ops"],
    media_type="text/plain; version=0.0.4",
    summary="Prometheus metrics",
)
async def metrics(board: BoardState) -> str:
    since = time.time() - board.config.lease_s

    def read(conn: Connection) -> tuple[dict, dict, int]:
        by_state = dict(
            conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
        )
        fh_states = dict(
            conn.execute(select(farmhands.c.state, func.count()).group_by(farmhands.c.state)).all()
        )
        online = conn.execute(
            select(func.count()).select_from(farmhands).where(farmhands.c.last_seen_at > since)
        ).scalar()
        return by_state, fh_states, online

    by_state, fh_states, online = await board.db.query(read)
    for state in JOB_STATES:
        by_state.setdefault(state, 0)
    return board.metrics.render(
        jobs_by_state=by_state, farmhands_online=online, farmhands_by_state=fh_states
    )


ROUTES = [health, ready, metrics]
