"""The job state machine: every transition of a job, its fencing and its follow-up, in one place.

    queued → claimed → running → succeeded | failed | cancelled
       ↑________|__________|   (lease lost, stalled, released, retryable failure)

**Fencing.** Every farmhand call about a job carries its ``lease_token``. A lease is bound to the
farmhand token that claimed (``<random>.<token id>``), and every change a farmhand makes is an
update ``WHERE lease_token = :token`` and the job holds a lease: a zombie (its lease expired, the
job moved on, it was cancelled) changes nothing and gets ``LeaseLost`` (409).

**One transition, one place.** Each change of state is made by ``_move`` (the fenced update and
the job event, in the caller's transaction) and announced after the commit by ``announce`` (the
live feed, the metrics, wake-ups for waiting claimers). What a failure does to the job and to
its farmhand (backoff, attempts, quarantine) is decided here and nowhere else. The claim query
that picks a job is ``board.domain.claims``; the lease it grants is ``grant_lease`` here.
See docs/architecture.md ("Job lifecycle").
"""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, bindparam, delete, insert, select, type_coerce, update
from sqlalchemy.engine import Connection

from board.domain import splits
from board.domain.tokens import Principal
from board.errors import BadRequest, Conflict, LeaseLost, NotFound, lease_lost
from board.infra.models import attempts, farmhands, job_events, jobs, outputs, usage
from board.state import BoardState
from wire import ACTIVE_STATES, Complete, Fail, Heartbeat, HeartbeatReply, Release

STDERR_TAIL_MAX = 8000
# Stages the reaper does not watch for stalls: moving bytes over the network (their speed is
# the link's, not ffmpeg's; the lease still is watched), and a split job, whose pieces are.
# A stage change counts as progress.
TRANSFER_STAGES = ("fetching", "uploading", splits.SPLIT_STAGE)
# The statements every farmhand call runs, built once; values are bound per call (``b_*`` name
# the WHERE's, the rest are the columns written), so SQLAlchemy reuses their compiled form.
_INSERT_EVENT = insert(job_events)
_FENCED_UPDATE = update(jobs).where(
    jobs.c.id == bindparam("b_id"),
    jobs.c.lease_token == bindparam("b_lease"),
    jobs.c.state.in_(ACTIVE_STATES),
)
_END_ATTEMPT = update(attempts).where(
    attempts.c.lease_token == bindparam("b_lease"), attempts.c.outcome.is_(None)
)
_FARMHAND_SEEN = update(farmhands).where(farmhands.c.id == bindparam("b_id"))
_TAKE_QUEUED = update(jobs).where(jobs.c.id == bindparam("b_id"), jobs.c.state == "queued")
_INSERT_ATTEMPT = insert(attempts)
_FARMHAND_DID_ONE = (
    update(farmhands)
    .where(farmhands.c.id == bindparam("b_id"))
    .values(consecutive_failures=0, jobs_done=farmhands.c.jobs_done + 1)
)
# What a job held no more looks like in every way back to the queue.
BACK_IN_QUEUE = {
    "lease_token": None,
    "lease_expires_at": None,
    "farmhand_id": None,
    "stage": None,
    "progress": 0.0,
    "eta_s": None,
}


# ---------------------------------------------------------------- follow-up of a transition


@dataclass(frozen=True)
class Moved:
    """A job a committed unit of work changed: ``to_state`` when its state changed, None when
    only its progress did."""

    job_id: str
    to_state: str | None = None


def announce(board: BoardState, moves: list[Moved]) -> None:
    """The follow-up of committed changes, on this process: live views re-read the jobs, the
    metrics count each transition, and as many waiting claimers wake as jobs became claimable."""
    claimable = 0
    for move in moves:
        board.feed.job_changed(move.job_id)
        if move.to_state is not None:
            board.metrics.transition(move.to_state)
            if move.to_state == "queued":
                claimable += 1
            if move.to_state != "claimed":
                board.unacknowledged.ack(move.job_id)
    if claimable:
        board.feed.work_available(claimable)


def record_event(
    conn: Connection, job_id: str, from_state: str | None, to_state: str, **details: Any
) -> None:
    """One row of the job's history; ``details``: ``event_row``'s farmhand, message and at."""
    conn.execute(_INSERT_EVENT, event_row(job_id, from_state, to_state, **details))


def record_events(conn: Connection, rows: list[dict]) -> None:
    """Many ``event_row``s in one statement (a batch submit's)."""
    if rows:
        conn.execute(_INSERT_EVENT, rows)


def event_row(
    job_id: str,
    from_state: str | None,
    to_state: str,
    *,
    farmhand: str | None = None,
    message: str = "",
    at: float | None = None,
) -> dict:
    """A row of the job's history."""
    return {
        "job_id": job_id,
        "at": at or time.time(),
        "from_state": from_state,
        "to_state": to_state,
        "farmhand": farmhand,
        "message": message[:2000],
    }


def _move(
    conn: Connection,
    job: Held,
    to_state: str,
    values: dict[str, Any],
    *,
    message: str,
    now: float,
) -> None:
    """Change a held job's state under its lease (LeaseLost when that lease no longer holds it)
    and record the event."""
    _fenced_update(conn, job, {"state": to_state, "updated_at": now, **values})
    record_event(conn, job.id, job.state, to_state, farmhand=job.farmhand, message=message, at=now)


def end_attempt(
    conn: Connection, lease_token: str, outcome: str, *, at: float, **values: Any
) -> None:
    if values.get("stderr_tail"):
        values["stderr_tail"] = values["stderr_tail"][-STDERR_TAIL_MAX:]
    conn.execute(
        _END_ATTEMPT, {"b_lease": lease_token, "outcome": outcome, "ended_at": at, **values}
    )


def _fenced_update(conn: Connection, job: Held, values: dict[str, Any]) -> None:
    """Write ``values`` to a held job only while its lease still holds it; LeaseLost if not."""
    result = conn.execute(_FENCED_UPDATE, {"b_id": job.id, "b_lease": job.lease_token, **values})
    if result.rowcount != 1:
        raise lease_lost(job.id)


# ---------------------------------------------------------------- leases and fencing


def new_lease_token(token_id: int) -> str:
    """A fresh lease: random, and bound to the farmhand token that claimed (``<random>.<id>``),
    so another farmhand token holding a leaked lease still cannot act on the job."""
    return f"{secrets.token_urlsafe(24)}.{token_id}"


def lease_issued_to(lease_token: str, token_id: int) -> bool:
    return lease_token.rsplit(".", 1)[-1] == str(token_id)


def own_lease(who: Principal, job_id: str, lease_token: str) -> None:
    """LeaseLost when a farmhand presents a lease issued to another farmhand token (a leaked
    lease is no key to someone else's job). Admins may act on any lease."""
    if who.role == "farmhand" and not lease_issued_to(lease_token, who.token_id):
        raise lease_lost(job_id, "that lease was issued to another farmhand token")


@dataclass(frozen=True)
class Held:
    """A job as seen through a valid lease."""

    id: str
    lease_token: str
    state: str
    attempts: int
    max_attempts: int
    farmhand_id: int | None
    farmhand: str | None
    submitter_id: int
    failed_by: list[int]
    stage: str | None
    progress: float
    kind: str  # render, or a piece of a split job: part, audio, join
    parent_id: str | None


_HELD = (
    select(
        jobs.c.id,
        jobs.c.state,
        jobs.c.attempts,
        jobs.c.max_attempts,
        jobs.c.farmhand_id,
        farmhands.c.name.label("farmhand"),
        jobs.c.submitter_id,
        jobs.c.stage,
        jobs.c.progress,
        jobs.c.kind,
        jobs.c.parent_id,
        type_coerce(jobs.c.failed_by, Text).label("failed_by"),
    )
    .select_from(jobs.outerjoin(farmhands, farmhands.c.id == jobs.c.farmhand_id))
    .where(
        jobs.c.id == bindparam("b_id"),
        jobs.c.lease_token == bindparam("b_lease"),
        jobs.c.state.in_(ACTIVE_STATES),
    )
)


def held_job(conn: Connection, job_id: str, lease_token: str) -> Held:
    """The job, if ``lease_token`` still holds it; LeaseLost otherwise."""
    row = conn.execute(_HELD, {"b_id": job_id, "b_lease": lease_token}).first()
    if row is None:
        raise lease_lost(job_id)
    return Held(**{**row._mapping, "lease_token": lease_token, "failed_by": _ids(row.failed_by)})


def _ids(raw: Any) -> list[int]:
    """``failed_by`` as read: JSON text (selected as text so most rows, failed nowhere, need no
    decoding)."""
    if not raw or raw == "[]":
        return []
    return list(json.loads(raw) if isinstance(raw, str) else raw)


def _cancelled_under(conn: Connection, job_id: str, lease_token: str) -> bool:
    """Whether the job was cancelled while ``lease_token`` held it (its holder is yet to be told
    to stop: its heartbeat answers ``cancel: true``)."""
    outcome = conn.execute(
        select(attempts.c.outcome).where(
            attempts.c.lease_token == lease_token, attempts.c.job_id == job_id
        )
    ).scalar()
    return outcome == "cancelled"


async def fence(
    board: BoardState, who: Principal, job_id: str, lease_token: str, *, cancelled_ok: bool = False
) -> None:
    """LeaseLost unless ``lease_token`` is ``who``'s and holds the job — or, with
    ``cancelled_ok``, held it when the job was cancelled. For calls that must answer 409 before
    anything else (a body that does not validate, a header-only call)."""
    own_lease(who, job_id, lease_token)

    def check(conn: Connection) -> None:
        try:
            held_job(conn, job_id, lease_token)
        except LeaseLost:
            if not (cancelled_ok and _cancelled_under(conn, job_id, lease_token)):
                raise

    await board.db.query(check)


# ---------------------------------------------------------------- the farmhand's transitions


def grant_lease(
    conn: Connection,
    job_id: str,
    attempt: int,
    *,
    farmhand_id: int,
    farmhand: str,
    token_id: int,
    lease_s: float,
    now: float,
) -> tuple[str, float] | None:
    """Hand a queued job to the farmhand under a new lease: (lease token, expiry), or None when
    the job is no longer queued (another claimer took it first)."""
    lease_token = new_lease_token(token_id)
    expires = now + lease_s
    taken = conn.execute(
        _TAKE_QUEUED,
        {
            "b_id": job_id,
            "state": "claimed",
            "lease_token": lease_token,
            "lease_expires_at": expires,
            "farmhand_id": farmhand_id,
            "attempts": attempt,
            "claimed_at": now,
            "progress_at": now,
            "stage": "claimed",
            "progress": 0.0,
            "updated_at": now,
        },
    )
    if taken.rowcount != 1:
        return None
    conn.execute(
        _INSERT_ATTEMPT,
        {
            "job_id": job_id,
            "number": attempt,
            "farmhand_id": farmhand_id,
            "lease_token": lease_token,
            "started_at": now,
        },
    )
    record_event(
        conn, job_id, "queued", "claimed", farmhand=farmhand, message=f"attempt {attempt}", at=now
    )
    return lease_token, expires


async def heartbeat(
    board: BoardState, job_id: str, beat: Heartbeat, who: Principal
) -> HeartbeatReply:
    """Extend the lease and record progress. A job cancelled under this lease answers
    ``cancel: true`` once more so the farmhand stops; any other stale lease is LeaseLost."""
    own_lease(who, job_id, beat.lease_token)
    now = time.time()
    expires = now + board.config.lease_s

    def unit(conn: Connection) -> str | None:
        try:
            held = held_job(conn, job_id, beat.lease_token)
        except LeaseLost:
            if _cancelled_under(conn, job_id, beat.lease_token):
                return None
            raise
        values: dict[str, Any] = {
            "lease_expires_at": expires,
            "stage": beat.stage,
            "progress": beat.progress,
            "eta_s": beat.eta_s,
        }
        # Stall detection watches progress, not heartbeats: a hung ffmpeg keeps heartbeating.
        if beat.progress > held.progress or beat.stage != held.stage or held.state == "claimed":
            values["progress_at"] = now
        if held.state == "claimed":
            _move(conn, held, "running", values, message=beat.stage, now=now)
        else:
            _move_quietly(conn, held, values, now=now)
        conn.execute(_FARMHAND_SEEN, {"b_id": held.farmhand_id, "last_seen_at": now})
        return held.state

    was = await board.db.transact(unit)
    board.unacknowledged.ack(job_id)
    if was is None:
        return HeartbeatReply(lease_expires_at=_dt(now), cancel=True)
    announce(board, [Moved(job_id, "running" if was == "claimed" else None)])
    return HeartbeatReply(lease_expires_at=_dt(expires), cancel=False)


def _move_quietly(conn: Connection, job: Held, values: dict[str, Any], *, now: float) -> None:
    """Update a held job without changing its state (progress): no event."""
    _fenced_update(conn, job, {"updated_at": now, **values})


async def complete(
    board: BoardState, job_id: str, done: Complete, who: Principal, *, output: dict[str, Any]
) -> None:
    """Mark the job succeeded with its verified output; record the submitter's usage from the
    real output duration, in the same transaction."""
    own_lease(who, job_id, done.lease_token)
    now = time.time()

    def unit(conn: Connection) -> list[Moved]:
        held = held_job(conn, job_id, done.lease_token)
        if held.kind != "audio" and not output["width"]:
            raise BadRequest(f"the uploaded output of job {job_id} has no video stream")
        _move(
            conn,
            held,
            "succeeded",
            {
                "stage": "done",
                "progress": 1.0,
                "eta_s": 0.0,
                "lease_token": None,
                "lease_expires_at": None,
                "encoder": done.encoder or None,
                "error": None,
                "finished_at": now,
            },
            message=f"{output['duration_s']:.2f} s, {output['size']} bytes",
            now=now,
        )
        conn.execute(insert(outputs).values(job_id=job_id, created_at=now, **output))
        moved = [Moved(job_id, "succeeded")]
        if held.kind == "render":
            _record_usage(conn, held.submitter_id, job_id, output["duration_s"], now)
        elif held.kind == "join":  # the split job is done: the join's output is its output
            moved += _finish_split(conn, held, output, now)
        elif (join := splits.add_join_when_ready(conn, held.parent_id, now)) is not None:
            moved.append(Moved(join, "queued"))
        end_attempt(
            conn,
            done.lease_token,
            "succeeded",
            at=now,
            encoder=done.encoder or None,
            stderr_tail=done.stderr_tail or None,
        )
        conn.execute(_FARMHAND_DID_ONE, {"b_id": held.farmhand_id, "last_seen_at": now})
        return moved

    announce(board, await board.db.transact(unit))


def _record_usage(
    conn: Connection, submitter_id: int, job_id: str, render_s: float, now: float
) -> None:
    """The month's usage of the submitter: the real length of what was rendered."""
    conn.execute(
        insert(usage).values(
            submitter_id=submitter_id,
            job_id=job_id,
            month=time.strftime("%Y-%m", time.gmtime(now)),
            render_seconds=render_s,
            at=now,
        )
    )


def _finish_split(conn: Connection, join: Held, output: dict[str, Any], now: float) -> list[Moved]:
    """The join of a split job succeeded: its output becomes the parent's, which succeeds."""
    parent = conn.execute(
        select(jobs.c.id, jobs.c.state, jobs.c.submitter_id).where(jobs.c.id == join.parent_id)
    ).one()
    done = conn.execute(
        update(jobs)
        .where(jobs.c.id == parent.id, jobs.c.state == "running")
        .values(state="succeeded", stage="done", progress=1.0, eta_s=0.0, error=None,
                finished_at=now, updated_at=now)
    )  # fmt: skip
    if done.rowcount != 1:
        return []  # cancelled meanwhile: the pieces' work is left unused
    conn.execute(insert(outputs).values(job_id=parent.id, created_at=now, **output))
    _record_usage(conn, parent.submitter_id, parent.id, output["duration_s"], now)
    message = f"joined: {output['duration_s']:.2f} s, {output['size']} bytes"
    record_event(conn, parent.id, "running", "succeeded", message=message, at=now)
    return [Moved(parent.id, "succeeded")]


def retry_delay(config, attempt: int) -> float:
    """Exponential backoff with ±20 % jitter: base × 2^(attempt−1), capped."""
    delay = config.retry_base_s * 2 ** max(0, attempt - 1)
    return min(config.retry_max_s, delay * random.uniform(0.8, 1.2))


async def fail(board: BoardState, job_id: str, failure: Fail, who: Principal) -> str:
    """A farmhand reports a failed attempt. Permanent → ``failed`` now; retryable → back to
    ``queued`` after backoff, preferably for another farmhand, until ``max_attempts``.
    Returns the job's new state."""
    own_lease(who, job_id, failure.lease_token)
    now = time.time()

    def unit(conn: Connection) -> tuple[str, list[Moved]]:
        held = held_job(conn, job_id, failure.lease_token)
        if failure.retryable and held.attempts < held.max_attempts:
            delay = retry_delay(board.config, held.attempts)
            to_state = "queued"
            values = {
                **BACK_IN_QUEUE,
                "not_before": now + delay,
                "queued_at": now,
                "failed_by": sorted(set(held.failed_by) | {held.farmhand_id}),
            }
            message = f"attempt {held.attempts} failed, retrying in {delay:.0f} s: {failure.error}"
        else:
            to_state = "failed"
            values = {
                "lease_token": None,
                "lease_expires_at": None,
                "eta_s": None,
                "finished_at": now,
                "stage": "failed",
            }
            message = failure.error
            if failure.retryable:
                message = f"gave up after {held.attempts} attempts: {failure.error}"
        _move(conn, held, to_state, {**values, "error": message}, message=message, now=now)
        end_attempt(
            conn,
            failure.lease_token,
            "failed",
            at=now,
            error=failure.error,
            encoder=failure.encoder or None,
            stderr_tail=failure.stderr_tail or None,
        )
        if to_state == "failed" and held.parent_id is not None:
            gave_up = splits.abandon(conn, held.parent_id, f"{held.kind} failed: {message}", now)
        else:
            gave_up = []
        # Only the farmhand's retryable failures count towards quarantine: a permanent failure is
        # the input's fault.
        _farmhand_outcome(
            board.config.quarantine_after,
            conn,
            held.farmhand_id,
            bad=failure.retryable,
            why=failure.error,
        )
        return to_state, [Moved(job_id, to_state), *(Moved(*m) for m in gave_up)]

    to_state, moved = await board.db.transact(unit)
    announce(board, moved)
    return to_state


async def release(board: BoardState, job_id: str, rel: Release, who: Principal) -> None:
    """Give the job back untouched (farmhand shutting down, or hung up while its claim was
    answered): ``queued`` at once, the attempt not counted against the job."""
    own_lease(who, job_id, rel.lease_token)
    now = time.time()

    await board.db.transact(
        lambda conn: _give_back(conn, held_job(conn, job_id, rel.lease_token), rel.reason, now)
    )
    announce(board, [Moved(job_id, "queued")])


def _give_back(conn: Connection, held: Held, why: str, now: float) -> None:
    """A job its farmhand gave back (or never knew it held): ``queued`` at once, the attempt
    not counted against it."""
    back = {**BACK_IN_QUEUE, "attempts": max(0, held.attempts - 1), "not_before": now}
    _move(conn, held, "queued", {**back, "queued_at": now}, message=f"released: {why}", now=now)
    end_attempt(conn, held.lease_token, "released", at=now, error=why)


def release_forgotten_claims(
    conn: Connection, farmhand_id: int, holding: list[str], now: float
) -> list[str]:
    """Requeue jobs this farmhand was handed but does not know it holds: the answer to its claim
    never reached it (the connection dropped). It lists what it holds on every claim, so a
    ``claimed`` job missing from ``holding`` was lost on the way."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.lease_token).where(
            jobs.c.farmhand_id == farmhand_id, jobs.c.state == "claimed"
        )
    ).all()
    released = []
    why = "the claim's answer never reached the farmhand"
    for row in rows:
        if row.id in holding:
            continue
        _give_back(conn, held_job(conn, row.id, row.lease_token), why, now)
        released.append(row.id)
    return released


# ---------------------------------------------------------------- lost leases (the reaper's verb)


def requeue_lost(
    conn: Connection,
    job: Any,
    *,
    quarantine_after: int,
    outcome: str,
    why: str,
    now: float,
    also: list[tuple[str, str]] | None = None,
) -> str | None:
    """A lease that ended without a word from its holder (expired or stalled): the attempt
    counts; the job goes back to the queue at once (it was not at fault) or fails when out of
    attempts. ``job`` is a row with id and lease_token. Returns the new state, or None when the
    lease had moved on already (another board process's reaper got there first); ``also``
    receives (id, state) of other jobs it moved (a split abandoned for a piece out of attempts).
    """
    try:
        held = held_job(conn, job.id, job.lease_token)
    except LeaseLost:
        return None
    out_of_attempts = held.attempts >= held.max_attempts
    message = why if not out_of_attempts else f"gave up after {held.attempts} attempts: {why}"
    if out_of_attempts:
        to_state = "failed"
        values = {
            "lease_token": None,
            "lease_expires_at": None,
            "eta_s": None,
            "stage": "failed",
            "finished_at": now,
        }
    else:
        to_state = "queued"
        values = {**BACK_IN_QUEUE, "not_before": now, "queued_at": now}
    _move(conn, held, to_state, {**values, "error": message}, message=message, now=now)
    end_attempt(conn, job.lease_token, outcome, at=now, error=why)
    _farmhand_outcome(quarantine_after, conn, held.farmhand_id, bad=True, why=why)
    if to_state == "failed" and held.parent_id is not None:
        gave_up = splits.abandon(conn, held.parent_id, f"{held.kind} {message}", now)
        if also is not None:
            also.extend(gave_up)
    return to_state


# ---------------------------------------------------------------- submitter and admin transitions


def _locked(conn: Connection, job_id: str) -> Any:
    """The job's row, locked until the transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE
    already is), so a complete, fail or claim racing this change is decided before or after it."""
    row = conn.execute(
        select(jobs.c.id, jobs.c.state, jobs.c.lease_token, jobs.c.farmhand_id, jobs.c.parent_id)
        .where(jobs.c.id == job_id)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


async def cancel(board: BoardState, job_id: str, *, by: str) -> str:
    """Cancel now: a queued job at once, a claimed/running one by revoking its lease (the holder
    learns at its next heartbeat); a split job with every piece of it (cancelling a piece cancels
    its job). Cancelling a cancelled job is a no-op; a finished one is 409."""
    now = time.time()

    def unit(conn: Connection) -> list[Moved]:
        row = _locked(conn, job_id)
        if row.parent_id is not None:
            row = _locked(conn, row.parent_id)
        if row.state == "cancelled":
            return []
        if row.state in ("succeeded", "failed"):
            raise Conflict(f"job {row.id} already {row.state}; nothing to cancel")
        why = f"cancelled by {by}"
        moved = [_cancel_one(conn, row, why, now)]
        for piece in splits.children(conn, row.id):
            if piece.state in ("queued", *ACTIVE_STATES):
                moved.append(_cancel_one(conn, _locked(conn, piece.id), why, now))
        return moved

    announce(board, await board.db.transact(unit))
    return "cancelled"


def _cancel_one(conn: Connection, row: Any, why: str, now: float) -> Moved:
    conn.execute(
        update(jobs)
        .where(jobs.c.id == row.id, jobs.c.state == row.state)
        .values(state="cancelled", lease_token=None, lease_expires_at=None, finished_at=now,
                stage="cancelled", eta_s=None, updated_at=now)
    )  # fmt: skip
    name = None
    if row.lease_token:
        end_attempt(conn, row.lease_token, "cancelled", at=now, error=why)
        name = _farmhand_name(conn, row.farmhand_id)
    record_event(conn, row.id, row.state, "cancelled", farmhand=name, message=why, at=now)
    return Moved(row.id, "cancelled")


async def retry(board: BoardState, job_id: str, *, by: str) -> None:
    """Put a failed or cancelled job back in the queue with a fresh attempt budget (a split job
    whole again: its old pieces go)."""
    now = time.time()

    def unit(conn: Connection) -> None:
        row = _locked(conn, job_id)
        if row.state not in ("failed", "cancelled") or row.parent_id is not None:
            raise Conflict(
                f"job {job_id} is {row.state if row.parent_id is None else 'a piece of a job'}; "
                "only failed or cancelled jobs can be retried"
            )
        conn.execute(delete(jobs).where(jobs.c.parent_id == job_id))
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == row.state)
            .values(
                **BACK_IN_QUEUE,
                state="queued",
                attempts=0,
                failed_by=[],
                not_before=now,
                queued_at=now,
                error=None,
                finished_at=None,
                updated_at=now,
            )
        )
        record_event(conn, job_id, row.state, "queued", message=f"retried by {by}", at=now)

    await board.db.transact(unit)
    announce(board, [Moved(job_id, "queued")])


async def set_priority(board: BoardState, job_id: str, priority: int, *, by: str) -> None:
    now = time.time()

    def unit(conn: Connection) -> None:
        row = _locked(conn, job_id)
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(priority=priority, updated_at=now)
        )
        record_event(
            conn,
            job_id,
            row.state,
            row.state,
            message=f"priority set to {priority} by {by}",
            at=now,
        )

    await board.db.transact(unit)
    announce(board, [Moved(job_id)])


# ---------------------------------------------------------------- farmhand bookkeeping


def _farmhand_outcome(
    quarantine_after: int, conn: Connection, farmhand_id: int | None, *, bad: bool, why: str
) -> None:
    """Count a farmhand's retryable failures and lost leases in a row; quarantine at the limit."""
    if farmhand_id is None:
        return
    mine = farmhands.c.id == farmhand_id
    if not bad:
        conn.execute(update(farmhands).where(mine).values(consecutive_failures=0))
        return
    conn.execute(
        update(farmhands)
        .where(mine)
        .values(consecutive_failures=farmhands.c.consecutive_failures + 1)
    )
    if quarantine_after <= 0:
        return
    reason = f"quarantined after {quarantine_after} failed or lost jobs in a row (last: {why})"
    conn.execute(
        update(farmhands)
        .where(
            mine,
            farmhands.c.consecutive_failures >= quarantine_after,
            farmhands.c.state == "active",
        )
        .values(state="quarantined", state_reason=reason[:2000])
    )


def _farmhand_name(conn: Connection, farmhand_id: int | None) -> str | None:
    if farmhand_id is None:
        return None
    return conn.execute(select(farmhands.c.name).where(farmhands.c.id == farmhand_id)).scalar()


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
