"""The farm's roster. A farmhand *is* its token (docs/architecture.md, "Farmhands").

Everything the board decides about a farmhand belongs to its farmhand token: its state (active,
paused, draining, quarantined, revoked), its run of failures, the jobs it failed (``failed_by``
holds farmhand ids, one per token) and its slots (the jobs held under its token). The name a
farmhand sends (``FARMHAND_NAME``) is only what the dashboard shows: a new name is a rename, never
a new farmhand, so nothing an admin or the board decided can be escaped by renaming. One token
per PC: two processes sharing a token are one farmhand to the board (one set of slots).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from board.domain.lifecycle import Moved, announce, release_forgotten_claims
from board.domain.matching import skills_of
from board.domain.tokens import Principal, revoke
from board.domain.views import farmhand_view
from board.errors import BadRequest, Conflict, Forbidden, NotFound
from board.infra.db import insert_or_ignore
from board.infra.models import farmhands, jobs, tokens
from board.state import BoardState, CheckIn
from wire import (
    ACTIVE_STATES,
    ClaimRequest,
    FarmhandStatus,
    FarmhandStatusReply,
    FarmhandView,
)

ADMIN_STATES = {"pause": "paused", "resume": "active", "drain": "draining", "revoke": "revoked"}
# A farmhand's row is refreshed by its claims at most every third of a lease (its heartbeats
# keep it fresh while it works): often enough that an idle farmhand never looks offline.
CHECK_IN_PER_LEASE = 3


@dataclass(frozen=True)
class FarmhandRow:
    id: int
    state: str
    state_reason: str


def check_in(
    conn: Connection,
    who: Principal,
    *,
    name: str,
    now: float,
    capabilities: Any = None,
    owner: dict[str, Any] | None = None,
) -> FarmhandRow:
    """Record that the farmhand of ``who``'s token is alive, under ``name`` (display only), with
    what it can do and what its owner is doing when told; return its row."""
    values: dict[str, Any] = {"name": name, "last_seen_at": now, **(owner or {})}
    if capabilities is not None:
        values["capabilities"] = msgspec.to_builtins(capabilities)
    mine = update(farmhands).where(farmhands.c.token_id == who.token_id).values(**values)
    if conn.execute(mine).rowcount == 0:
        fresh = {
            "token_id": who.token_id,
            "state": "active",
            "state_reason": "",
            "owner_paused": False,
            "owner_reason": "",
            "consecutive_failures": 0,
            "jobs_done": 0,
            "capabilities": None,
            "first_seen_at": now,
            **values,
        }
        # The farmhand's first calls may race to make its row: one insert wins, the rest update.
        if conn.execute(insert_or_ignore(conn, farmhands).values(**fresh)).rowcount == 0:
            conn.execute(mine)
    row = conn.execute(
        select(farmhands.c.id, farmhands.c.state, farmhands.c.state_reason).where(
            farmhands.c.token_id == who.token_id
        )
    ).one()
    return FarmhandRow(id=row.id, state=row.state, state_reason=row.state_reason)


def _refuse_revoked(row: FarmhandRow) -> None:
    if row.state == "revoked":
        raise Forbidden(f"this farmhand was revoked: {row.state_reason}")


def recent_check_in(board: BoardState, request: ClaimRequest, who: Principal) -> CheckIn | None:
    """A claim's check-in when nothing changed since the last one a few seconds ago (same name,
    same capabilities, nothing missing from what it holds): a farmhand long-polls all day, and
    then the database is not touched. None: the claim must check in (``claim_check_in``)."""
    last = board.check_ins.get(who.token_id)
    if (
        last is not None
        and last.name == request.farmhand
        and last.capabilities == msgspec.json.encode(request.capabilities)
        and time.time() - last.at < board.config.lease_s / CHECK_IN_PER_LEASE
        and not board.unacknowledged.missing_from(who.token_id, request.running)
    ):
        _refuse_revoked(FarmhandRow(last.farmhand_id, last.state, last.state_reason))
        return last
    return None


@dataclass(frozen=True)
class ClaimCheckIn:
    """What a claim's check-in wrote: the farmhand's row, and the jobs it was handed but does
    not list as held (the claim's answer never reached it), now back in the queue."""

    me: FarmhandRow
    forgotten: list[str]
    at: float


def claim_check_in(
    conn: Connection, request: ClaimRequest, who: Principal, now: float
) -> ClaimCheckIn:
    """A claim's check-in, inside the unit of work that then looks for its job: the farmhand
    is alive and can do this; forgotten claims go back to the queue, claimable at ``now``."""
    me = check_in(conn, who, name=request.farmhand, now=now, capabilities=request.capabilities)
    return ClaimCheckIn(me, release_forgotten_claims(conn, me.id, request.running, now), now)


def checked_in(
    board: BoardState, request: ClaimRequest, who: Principal, done: ClaimCheckIn
) -> CheckIn:
    """After ``claim_check_in`` committed: tell the waiting claimers of the jobs it put back,
    remember the check-in; Forbidden when the farmhand was revoked."""
    for job_id in done.forgotten:
        board.unacknowledged.ack(job_id)
    announce(board, [Moved(job_id, "queued") for job_id in done.forgotten])
    me = done.me
    caps = msgspec.json.encode(request.capabilities)
    checked = CheckIn(
        me.id, who.token_id, request.farmhand, caps, me.state, me.state_reason, done.at
    )
    board.check_ins[who.token_id] = checked
    _refuse_revoked(me)
    return checked


async def report_status(
    board: BoardState, status: FarmhandStatus, who: Principal
) -> FarmhandStatusReply:
    """Record liveness and the owner's pause; answer with the admin's state for this farmhand."""
    owner = {"owner_paused": status.paused, "owner_reason": status.reason if status.paused else ""}
    row = await board.db.transact(
        lambda conn: check_in(
            conn,
            who,
            name=status.farmhand,
            now=time.time(),
            capabilities=status.capabilities,
            owner=owner,
        )
    )
    _refuse_revoked(row)
    # Who is online is re-read every second; tell the snapshot now (a claim a moment later
    # must know this farmhand could take a job another one failed).
    online = board.online
    if row.state != "active" or status.paused:
        if row.id in online.skills:
            board.online = online.updated(row.id, None)
    elif status.capabilities is not None:
        board.online = online.updated(row.id, skills_of(status.capabilities))
    elif row.id not in online.skills:
        online.at = 0.0  # back, and what it can do is in the database: re-read at the next claim
    board.feed.farm_changed()
    return FarmhandStatusReply(state=row.state, reason=row.state_reason)


def _roster(conn: Connection) -> tuple[list, list]:
    rows = conn.execute(
        select(farmhands, tokens.c.name.label("token_name"))
        .select_from(farmhands.outerjoin(tokens, tokens.c.id == farmhands.c.token_id))
        .order_by(farmhands.c.name, farmhands.c.id)
    ).all()
    held = conn.execute(
        select(jobs.c.id, jobs.c.farmhand_id).where(jobs.c.state.in_(ACTIVE_STATES))
    ).all()
    return rows, held


async def list_farmhands(board: BoardState) -> list[FarmhandView]:
    now = time.time()
    rows, held = await board.db.query(_roster)
    current: dict[int, list[str]] = {}
    for job in held:
        current.setdefault(job.farmhand_id, []).append(job.id)
    return [
        farmhand_view(r, now=now, lease_s=board.config.lease_s, current_jobs=current.get(r.id, []))
        for r in rows
        if r.token_id is not None  # rows from before identity was the token are history only
    ]


def _resolve(conn: Connection, name: str) -> Any:
    """The farmhand an admin means by ``name``: its token's name, else its display name when
    only one farmhand goes by it."""
    query = select(
        farmhands.c.id, farmhands.c.token_id, tokens.c.name.label("token_name")
    ).select_from(farmhands.join(tokens, tokens.c.id == farmhands.c.token_id))
    found = conn.execute(query.where(tokens.c.name == name)).all()
    if not found:
        found = conn.execute(query.where(farmhands.c.name == name)).all()
    if not found:
        raise NotFound(f"no farmhand named {name!r} (give its token's name or its own name)")
    if len(found) > 1:
        tokens_ = ", ".join(sorted(r.token_name for r in found))
        raise Conflict(
            f"several farmhands call themselves {name!r}; name one by its token: {tokens_}"
        )
    return found[0]


async def set_farmhand_state(
    board: BoardState, name: str, action: str, *, reason: str, by: str
) -> FarmhandView:
    """pause (no new jobs), resume (also lifts a quarantine), drain (finish, then no new jobs),
    revoke (its token is revoked: refused from now on; its running job is left to its lease).
    ``name`` is the farmhand's token name, or its display name where that is unambiguous."""
    state = ADMIN_STATES.get(action)
    if state is None:
        raise BadRequest(f"unknown action {action!r}; use one of {', '.join(ADMIN_STATES)}")
    target = await board.db.query(lambda conn: _resolve(conn, name))
    why = reason or f"{action} by {by}"
    if state == "revoked":
        await revoke(board, target.token_name, reason=why)
    else:
        values: dict[str, Any] = {
            "state": state,
            "state_reason": "" if state == "active" else why,
        }
        if state == "active":
            values["consecutive_failures"] = 0
        # a revoked farmhand stays revoked: its token is gone for good
        await board.db.transact(
            lambda conn: conn.execute(
                update(farmhands)
                .where(farmhands.c.id == target.id, farmhands.c.state != "revoked")
                .values(**values)
            )
        )
    board.check_ins.pop(target.token_id, None)  # the next claim re-reads the farmhand's state
    board.online.at = 0.0
    board.feed.farm_changed(wake_all=True)  # waiting claimers look again (resumed, or refused)
    for view in await list_farmhands(board):
        if view.token == target.token_name:
            return view
    raise NotFound(f"no farmhand named {name!r}")
