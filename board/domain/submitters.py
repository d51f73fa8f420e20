"""Submitters: who they are, their limits, what they used this month."""

from __future__ import annotations

import time

import msgspec
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from board.domain.limits import load_limits, month_of, storage_used
from board.errors import BadRequest, NotFound
from board.infra.models import media, submitters, usage
from board.state import BoardState
from wire import Limits, SubmitterView


def _submitter_view(conn: Connection, name: str, now: float) -> SubmitterView:
    row = conn.execute(select(submitters.c.id).where(submitters.c.name == name)).first()
    if row is None:
        raise NotFound(f"no submitter named {name!r}")
    used = conn.execute(
        select(func.coalesce(func.sum(usage.c.render_seconds), 0.0)).where(
            usage.c.submitter_id == row.id, usage.c.month == month_of(now)
        )
    ).scalar()
    return SubmitterView(
        name=name,
        limits=load_limits(conn, row.id).limits,
        render_seconds_this_month=float(used),
        storage_bytes=storage_used(conn, row.id),
    )


async def get_submitter(board: BoardState, name: str) -> SubmitterView:
    now = time.time()
    return await board.db.query(lambda conn: _submitter_view(conn, name, now))


async def list_submitters(board: BoardState) -> list[SubmitterView]:
    now = time.time()

    def read(conn: Connection) -> list[SubmitterView]:
        names = conn.execute(select(submitters.c.name).order_by(submitters.c.name)).scalars()
        return [_submitter_view(conn, name, now) for name in names.all()]

    return await board.db.query(read)


INT32_MAX = 2**31 - 1


def _check_storable(limits: Limits) -> None:
    """The counts are stored as 32-bit integers; a larger one would mean "no limit" anyway."""
    for field in ("max_width", "max_height", "max_clips"):
        value = getattr(limits, field)
        if value is not None and value > INT32_MAX:
            raise BadRequest(f"{field} {value} is out of range (at most {INT32_MAX}; leave it out "
                             "for no limit)")  # fmt: skip


async def set_limits(board: BoardState, name: str, limits: Limits) -> SubmitterView:
    """Replace a submitter's limits (fields left out mean no limit)."""
    _check_storable(limits)

    def unit(conn: Connection) -> None:
        if limits.forced_watermark:
            found = conn.execute(
                select(media.c.id, media.c.probe).where(media.c.id == limits.forced_watermark)
            ).first()
            if found is None:
                raise BadRequest(f"forced watermark: unknown media id {limits.forced_watermark!r}")
            if not (found.probe or {}).get("has_video"):
                raise BadRequest("forced watermark: that media is not an image or video")
        result = conn.execute(
            update(submitters)
            .where(submitters.c.name == name)
            .values(**msgspec.structs.asdict(limits))
        )
        if result.rowcount == 0:
            raise NotFound(f"no submitter named {name!r}")

    await board.db.transact(unit)
    return await get_submitter(board, name)
