"""The farm's roster: farmhands as the board knows them — liveness, what they can do, the owner's
pause they report, and the admin's pause / resume / drain / revoke."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from board.errors import BadRequest, Forbidden, NotFound
from board.models import farmhands, jobs, tokens
from board.state import BoardState
from board.views import farmhand_view
from wire import Capabilities, FarmhandStatus, FarmhandStatusReply, FarmhandView

ADMIN_STATES = {"pause": "paused", "resume": "active", "drain": "draining", "revoke": "revoked"}


def _insert_new(conn: Connection, table):
    """An INSERT that does nothing when a unique key is taken already (both engines)."""
    if conn.dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


def upsert_farmhand(
    conn: Connection,
    name: str,
    *,
    token_id: int,
    now: float,
    capabilities: Capabilities | None,
    extra: dict | None = None,
):
    """Record that the farmhand is alive (and what it can do, when told); return its row.

    A farmhand's name belongs to the token that first used it, until that token is revoked:
    another token cannot speak for it (and, say, give back the jobs it was handed)."""
    values: dict[str, Any] = {"last_seen_at": now, "token_id": token_id, **(extra or {})}
    if capabilities is not None:
        values["capabilities"] = msgspec.to_builtins(capabilities)
    revoked = select(tokens.c.id).where(tokens.c.revoked_at.is_not(None))
    mine = update(farmhands).where(
        farmhands.c.name == name,
        or_(
            farmhands.c.token_id == token_id,
            farmhands.c.token_id.is_(None),
            farmhands.c.token_id.in_(revoked),
        ),
    )
    result = conn.execute(mine.values(**values))
    if result.rowcount == 0:
        row = {"capabilities": None, "owner_paused": False, "owner_reason": ""}
        row.update(values)
        # A farmhand's first calls may race to create its row: the first insert wins, the
        # others update the row it made.
        created = conn.execute(_insert_new(conn, farmhands).values(
            name=name, state="active", state_reason="", consecutive_failures=0, jobs_done=0,
            first_seen_at=now, **row))  # fmt: skip
        if created.rowcount == 0 and conn.execute(mine.values(**values)).rowcount == 0:
            raise Forbidden(
                f"the farmhand name {name!r} belongs to another farmhand token; give this "
                "farmhand its own name (FARMHAND_NAME), or revoke the other token first"
            )
    return conn.execute(
        select(farmhands.c.id, farmhands.c.state, farmhands.c.state_reason).where(
            farmhands.c.name == name
        )
    ).first()


async def report_status(
    board: BoardState, status: FarmhandStatus, *, token_id: int
) -> FarmhandStatusReply:
    """Record liveness and the owner's pause; answer with the admin's state for this farmhand."""
    extra = {"owner_paused": status.paused, "owner_reason": status.reason if status.paused else ""}
    row = await board.db.transact(
        lambda conn: upsert_farmhand(
            conn,
            status.farmhand,
            token_id=token_id,
            now=time.time(),
            capabilities=status.capabilities,
            extra=extra,
        )
    )
    if row.state == "revoked":
        raise Forbidden(f"farmhand {status.farmhand} was revoked: {row.state_reason}")
    board.online.at = 0.0  # the farm changed: re-read who is online at the next claim
    board.feed.farm_changed()
    return FarmhandStatusReply(state=row.state, reason=row.state_reason)


async def list_farmhands(board: BoardState) -> list[FarmhandView]:
    now = time.time()
    async with board.db.read() as conn:
        rows = (await conn.execute(select(farmhands).order_by(farmhands.c.name))).all()
        held = (
            await conn.execute(
                select(jobs.c.id, jobs.c.farmhand_id).where(
                    jobs.c.state.in_(("claimed", "running"))
                )
            )
        ).all()
    current: dict[int, list[str]] = {}
    for job in held:
        current.setdefault(job.farmhand_id, []).append(job.id)
    return [
        farmhand_view(r, now=now, lease_s=board.config.lease_s, current_jobs=current.get(r.id, []))
        for r in rows
    ]


async def set_farmhand_state(
    board: BoardState, name: str, action: str, *, reason: str, by: str
) -> FarmhandView:
    """pause (no new jobs), resume (also lifts a quarantine), drain (finish, then no new jobs),
    revoke (refused from now on; its running job is left to its lease)."""
    state = ADMIN_STATES.get(action)
    if state is None:
        raise BadRequest(f"unknown action {action!r}; use one of {', '.join(ADMIN_STATES)}")
    why = reason or f"{action} by {by}"
    values: dict[str, Any] = {"state": state, "state_reason": "" if state == "active" else why}
    if state == "active":
        values["consecutive_failures"] = 0

    def unit(conn: Connection) -> None:
        result = conn.execute(update(farmhands).where(farmhands.c.name == name).values(**values))
        if result.rowcount == 0:
            raise NotFound(f"no farmhand named {name!r}")

    await board.db.transact(unit)
    board.check_ins.pop(name, None)  # the next claim re-reads the farmhand's state
    board.online.at = 0.0
    board.feed.farm_changed(wake_all=state == "active")
    for view in await list_farmhands(board):
        if view.name == name:
            return view
    raise NotFound(f"no farmhand named {name!r}")
