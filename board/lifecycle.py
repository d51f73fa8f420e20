"""The job state machine: every transition of a job after submit, in one place.

    queued → claimed → running → succeeded | failed | cancelled
       ↑________|__________|   (lease lost, stalled, released, retryable failure)

Every call from a farmhand about a job is *fenced* by its ``lease_token``: the update only
happens ``WHERE lease_token = :token`` and a state that holds a lease, so a zombie (its lease
expired, the job moved on) changes nothing and gets ``LeaseLost`` (409). Every transition writes a
job event in the same transaction. What a failure does to the job and to the farmhand (backoff,
max attempts, quarantine) is decided here and nowhere else.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, and_, bindparam, insert, select, type_coerce, update
from sqlalchemy.engine import Connection

from board.db import Prepared, PreparedWrite, among
from board.errors import Conflict, LeaseLost, NotFound
from board.models import attempts, farmhands, job_events, jobs, outputs, usage
from board.state import BoardState
from wire import ACTIVE_STATES, Complete, Fail, Heartbeat, HeartbeatReply, Release

STDERR_TAIL_MAX = 8000

# The hot statements, built and compiled once: constructing a SQLAlchemy expression, and running
# it through SQLAlchemy, cost more than the database takes to run it (board/db.py, Prepared).
# Parameters named b_* fill WHERE clauses; a PreparedWrite writes the columns its call names.
INSERT_EVENT = PreparedWrite(insert(job_events))
SELECT_HELD = Prepared(
    select(
        jobs.c.id,
        jobs.c.state,
        jobs.c.attempts,
        jobs.c.max_attempts,
        jobs.c.farmhand_id,
        farmhands.c.name.label("farmhand"),
        jobs.c.submitter_id,
        type_coerce(jobs.c.failed_by, Text).label("failed_by"),
    )
    .select_from(jobs.outerjoin(farmhands, farmhands.c.id == jobs.c.farmhand_id))
    .where(
        jobs.c.id == bindparam("b_id"),
        jobs.c.lease_token == bindparam("b_lease"),
        among(jobs.c.state, ACTIVE_STATES),
    )
)
FENCED_UPDATE = PreparedWrite(
    update(jobs).where(
        jobs.c.id == bindparam("b_id"),
        jobs.c.lease_token == bindparam("b_lease"),
        among(jobs.c.state, ACTIVE_STATES),
    )
)
RESET_FAILURES = (
    update(farmhands)
    .where(farmhands.c.id == bindparam("b_id"), farmhands.c.consecutive_failures != 0)
    .values(consecutive_failures=0)
)
END_ATTEMPT = PreparedWrite(
    update(attempts).where(
        attempts.c.lease_token == bindparam("b_lease"), attempts.c.outcome.is_(None)
    )
)
HEARTBEAT_ROW = Prepared(
    select(jobs.c.state, jobs.c.stage, jobs.c.progress, jobs.c.farmhand_id).where(
        jobs.c.id == bindparam("b_id"),
        jobs.c.lease_token == bindparam("b_lease"),
        among(jobs.c.state, ACTIVE_STATES),
    )
)
FARMHAND_SEEN = Prepared(
    update(farmhands)
    .where(farmhands.c.id == bindparam("b_id"))
    .values(last_seen_at=bindparam("b_now"))
)
FARMHAND_DID_ONE = Prepared(
    update(farmhands)
    .where(farmhands.c.id == bindparam("b_id"))
    .values(
        consecutive_failures=0,
        jobs_done=farmhands.c.jobs_done + 1,
        last_seen_at=bindparam("b_now"),
    )
)
FARMHAND_NAME = Prepared(select(farmhands.c.name).where(farmhands.c.id == bindparam("b_id")))
INSERT_OUTPUT = PreparedWrite(insert(outputs))
INSERT_USAGE = PreparedWrite(insert(usage))
# Stages that move bytes over the network: their speed is the link's, not ffmpeg's, so they are
# not watched for stalls (the lease still is). A stage change counts as progress.
TRANSFER_STAGES = ("fetching", "uploading")


def record_event(
    conn: Connection,
    job_id: str,
    from_state: str | None,
    to_state: str,
    *,
    farmhand: str | None = None,
    message: str = "",
    at: float | None = None,
) -> None:
    INSERT_EVENT.execute(
        conn,
        {
            "job_id": job_id,
            "at": at or time.time(),
            "from_state": from_state,
            "to_state": to_state,
            "farmhand": farmhand,
            "message": message[:2000],
        },
    )


def new_lease_token(token_id: int) -> str:
    """A fresh lease: random, and bound to the farmhand token that claimed (``<random>.<id>``),
    so another farmhand token holding a leaked lease still cannot act on the job."""
    return f"{secrets.token_urlsafe(24)}.{token_id}"


def lease_issued_to(lease_token: str, token_id: int) -> bool:
    return lease_token.rsplit(".", 1)[-1] == str(token_id)


def retry_delay(config, attempt: int) -> float:
    """Exponential backoff with ±20 % jitter: base × 2^(attempt−1), capped."""
    delay = config.retry_base_s * 2 ** max(0, attempt - 1)
    return min(config.retry_max_s, delay * random.uniform(0.8, 1.2))


@dataclass(frozen=True)
class Held:
    """A job as seen through a valid lease."""

    id: str
    state: str
    attempts: int
    max_attempts: int
    farmhand_id: int | None
    farmhand: str | None
    submitter_id: int
    failed_by: list


def held_job(conn: Connection, job_id: str, lease_token: str) -> Held:
    """The job, if ``lease_token`` still holds it; LeaseLost otherwise."""
    row = SELECT_HELD.execute(conn, {"b_id": job_id, "b_lease": lease_token}).fetchone()
    if row is None:
        raise LeaseLost(job_id)
    *fields, failed_by = row  # JSON text on SQLite; asyncpg decodes JSON itself
    failed = json.loads(failed_by) if isinstance(failed_by, str) else failed_by
    return Held(*fields, failed_by=list(failed or []))


def cancelled_under(conn: Connection, job_id: str, lease_token: str) -> bool:
    """Whether the job was cancelled while ``lease_token`` held it (its holder is yet to be told
    to stop: its heartbeat answers ``cancel: true``)."""
    outcome = (
        conn.execute(
            select(attempts.c.outcome).where(
                attempts.c.lease_token == lease_token, attempts.c.job_id == job_id
            )
        )
    ).scalar()
    return outcome == "cancelled"


def check_lease(
    conn: Connection, job_id: str, lease_token: str, *, cancelled_ok: bool = False
) -> None:
    """LeaseLost unless ``lease_token`` holds the job — or, with ``cancelled_ok``, held it when the
    job was cancelled (a heartbeat then answers ``cancel: true`` rather than 409)."""
    try:
        held_job(conn, job_id, lease_token)
    except LeaseLost:
        if not (cancelled_ok and cancelled_under(conn, job_id, lease_token)):
            raise


def _fenced_update(conn: Connection, job_id: str, lease_token: str, values: dict[str, Any]) -> None:
    result = FENCED_UPDATE.execute(conn, values, {"b_id": job_id, "b_lease": lease_token})
    if result.rowcount != 1:
        raise LeaseLost(job_id)


def _end_attempt(
    conn: Connection, lease_token: str, outcome: str, *, at: float, **values: Any
) -> None:
    if values.get("stderr_tail"):
        values["stderr_tail"] = values["stderr_tail"][-STDERR_TAIL_MAX:]
    END_ATTEMPT.execute(
        conn, {"outcome": outcome, "ended_at": at, **values}, {"b_lease": lease_token}
    )


# ---------------------------------------------------------------- farmhand calls


async def heartbeat(
    board: BoardState, job_id: str, beat: Heartbeat, *, farmhand_token_id: int
) -> HeartbeatReply:
    """Extend the lease and record progress. A job cancelled under this lease answers
    ``cancel: true`` once more so the farmhand stops; any other stale lease is LeaseLost."""
    now = time.time()
    expires = now + board.config.lease_s

    def unit(conn: Connection) -> str | None:
        row = HEARTBEAT_ROW.execute(conn, {"b_id": job_id, "b_lease": beat.lease_token}).fetchone()
        if row is None:
            if cancelled_under(conn, job_id, beat.lease_token):
                return None
            raise LeaseLost(job_id)
        values: dict[str, Any] = {
            "lease_expires_at": expires,
            "stage": beat.stage,
            "progress": beat.progress,
            "eta_s": beat.eta_s,
            "updated_at": now,
        }
        state, stage, progress, farmhand_id = row
        # Stall detection watches progress, not heartbeats: a hung ffmpeg keeps heartbeating.
        if beat.progress > progress or beat.stage != stage or state == "claimed":
            values["progress_at"] = now
        if state == "claimed":
            values["state"] = "running"
        _fenced_update(conn, job_id, beat.lease_token, values)
        if state == "claimed":
            name = _farmhand_name(conn, farmhand_id)
            record_event(
                conn, job_id, "claimed", "running", farmhand=name, message=beat.stage, at=now
            )
        FARMHAND_SEEN.execute(conn, {"b_id": farmhand_id, "b_now": now})
        return state

    was = await board.db.transact(unit)
    board.unacknowledged.ack(job_id)
    if was is None:
        return HeartbeatReply(lease_expires_at=_dt(now), cancel=True)
    board.feed.job_changed(job_id)
    if was == "claimed":
        board.metrics.transition("running")
    return HeartbeatReply(lease_expires_at=_dt(expires), cancel=False)


async def complete(
    board: BoardState, job_id: str, done: Complete, *, output: dict[str, Any]
) -> None:
    """Mark the job succeeded with its verified output; record the submitter's usage from the
    real output duration, in the same transaction."""
    now = time.time()

    def unit(conn: Connection) -> None:
        held = held_job(conn, job_id, done.lease_token)
        _fenced_update(
            conn,
            job_id,
            done.lease_token,
            {
                "state": "succeeded",
                "stage": "done",
                "progress": 1.0,
                "eta_s": 0.0,
                "lease_token": None,
                "lease_expires_at": None,
                "encoder": done.encoder or None,
                "error": None,
                "finished_at": now,
                "updated_at": now,
            },
        )
        INSERT_OUTPUT.execute(conn, {"job_id": job_id, "created_at": now, **output})
        INSERT_USAGE.execute(
            conn,
            {
                "submitter_id": held.submitter_id,
                "job_id": job_id,
                "month": time.strftime("%Y-%m", time.gmtime(now)),
                "render_seconds": output["duration_s"],
                "at": now,
            },
        )
        _end_attempt(
            conn,
            done.lease_token,
            "succeeded",
            at=now,
            encoder=done.encoder or None,
            stderr_tail=done.stderr_tail or None,
        )
        FARMHAND_DID_ONE.execute(conn, {"b_id": held.farmhand_id, "b_now": now})
        record_event(
            conn,
            job_id,
            held.state,
            "succeeded",
            farmhand=held.farmhand,
            message=f"{output['duration_s']:.2f} s, {output['size']} bytes",
            at=now,
        )

    await board.db.transact(unit)
    board.unacknowledged.ack(job_id)
    board.feed.job_changed(job_id)
    board.metrics.transition("succeeded")


async def fail(board: BoardState, job_id: str, failure: Fail) -> str:
    """A farmhand reports a failed attempt. Permanent → ``failed`` now; retryable → back to
    ``queued`` after backoff, preferably for another farmhand, until ``max_attempts``.
    Returns the job's new state."""
    now = time.time()

    def unit(conn: Connection) -> str:
        held = held_job(conn, job_id, failure.lease_token)
        if failure.retryable and held.attempts < held.max_attempts:
            delay = retry_delay(board.config, held.attempts)
            to_state = "queued"
            failed_by = sorted(set(held.failed_by) | {held.farmhand_id})
            values = {
                "not_before": now + delay,
                "queued_at": now,
                "failed_by": failed_by,
                "farmhand_id": None,
                "stage": None,
                "progress": 0.0,
            }
            message = f"attempt {held.attempts} failed, retrying in {delay:.0f} s: {failure.error}"
        else:
            to_state = "failed"
            values = {"finished_at": now, "stage": "failed"}
            message = failure.error
            if failure.retryable:
                message = f"gave up after {held.attempts} attempts: {failure.error}"
        _fenced_update(
            conn,
            job_id,
            failure.lease_token,
            {
                "state": to_state,
                "lease_token": None,
                "lease_expires_at": None,
                "error": message,
                "eta_s": None,
                "updated_at": now,
                **values,
            },
        )
        _end_attempt(
            conn,
            failure.lease_token,
            "failed",
            at=now,
            error=failure.error,
            encoder=failure.encoder or None,
            stderr_tail=failure.stderr_tail or None,
        )
        # Only the farmhand's retryable failures count towards quarantine: a permanent failure is
        # the input's fault.
        _farmhand_outcome(
            board.config.quarantine_after,
            conn,
            held.farmhand_id,
            bad=failure.retryable,
            why=failure.error,
            at=now,
        )
        record_event(
            conn, job_id, held.state, to_state, farmhand=held.farmhand, message=message, at=now
        )
        return to_state

    to_state = await board.db.transact(unit)
    board.unacknowledged.ack(job_id)
    board.feed.job_changed(job_id)
    board.metrics.transition(to_state)
    if to_state == "queued":
        board.feed.work_available()
    return to_state


async def release(board: BoardState, job_id: str, rel: Release) -> None:
    """Give the job back untouched (farmhand shutting down): ``queued`` at once, the attempt is
    not counted against the job."""
    now = time.time()

    def unit(conn: Connection) -> None:
        held = held_job(conn, job_id, rel.lease_token)
        _fenced_update(
            conn,
            job_id,
            rel.lease_token,
            {
                "state": "queued",
                "lease_token": None,
                "lease_expires_at": None,
                "farmhand_id": None,
                "attempts": max(0, held.attempts - 1),
                "not_before": now,
                "queued_at": now,
                "stage": None,
                "progress": 0.0,
                "eta_s": None,
                "updated_at": now,
            },
        )
        _end_attempt(conn, rel.lease_token, "released", at=now, error=rel.reason)
        record_event(
            conn,
            job_id,
            held.state,
            "queued",
            farmhand=held.farmhand,
            message=f"released: {rel.reason}",
            at=now,
        )

    await board.db.transact(unit)
    board.unacknowledged.ack(job_id)
    board.feed.job_changed(job_id)
    board.feed.work_available()
    board.metrics.transition("queued")


def release_forgotten_claims(
    conn: Connection, farmhand_id: int, holding: list[str], now: float
) -> list[str]:
    """Requeue jobs this farmhand was handed but does not know it holds: the answer to its claim
    never reached it (the connection dropped). It says what it holds on every claim, and claims
    one job at a time, so a ``claimed`` job missing from ``holding`` was lost on the way."""
    rows = (
        conn.execute(
            select(jobs.c.id, jobs.c.lease_token, jobs.c.attempts, farmhands.c.name)
            .select_from(jobs.join(farmhands, farmhands.c.id == jobs.c.farmhand_id))
            .where(jobs.c.farmhand_id == farmhand_id, jobs.c.state == "claimed")
        )
    ).all()
    released = []
    for row in rows:
        if row.id in holding:
            continue
        _fenced_update(conn, row.id, row.lease_token, {
            "state": "queued", "lease_token": None, "lease_expires_at": None, "farmhand_id": None,
            "attempts": max(0, row.attempts - 1), "not_before": now, "queued_at": now,
            "stage": None, "progress": 0.0, "updated_at": now,
        })  # fmt: skip
        why = "the claim's answer never reached the farmhand"
        _end_attempt(conn, row.lease_token, "released", at=now, error=why)
        record_event(
            conn, row.id, "claimed", "queued", farmhand=row.name, message=f"released: {why}", at=now
        )
        released.append(row.id)
    return released


# ---------------------------------------------------------------- submitter / admin calls


async def cancel(board: BoardState, job_id: str, *, by: str) -> str:
    """Cancel now: a queued job at once, a claimed/running one by revoking its lease (the holder
    learns at its next heartbeat). Cancelling a cancelled job is a no-op; a finished one is 409."""
    now = time.time()

    def unit(conn: Connection) -> bool:
        # Locked (PostgreSQL; SQLite's BEGIN IMMEDIATE already is) so a complete, fail or claim
        # racing this cancel is decided before or after it, never half-way.
        row = (
            conn.execute(
                select(jobs.c.state, jobs.c.lease_token, jobs.c.farmhand_id)
                .where(jobs.c.id == job_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        if row.state == "cancelled":
            return False
        if row.state in ("succeeded", "failed"):
            raise Conflict(f"job {job_id} already {row.state}; nothing to cancel")
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == row.state)
            .values(
                state="cancelled",
                lease_token=None,
                lease_expires_at=None,
                finished_at=now,
                stage="cancelled",
                eta_s=None,
                updated_at=now,
            )
        )
        name = None
        if row.lease_token:
            _end_attempt(conn, row.lease_token, "cancelled", at=now, error=f"cancelled by {by}")
            name = _farmhand_name(conn, row.farmhand_id)
        record_event(
            conn,
            job_id,
            row.state,
            "cancelled",
            farmhand=name,
            message=f"cancelled by {by}",
            at=now,
        )
        return True

    if not await board.db.transact(unit):
        return "cancelled"
    board.unacknowledged.ack(job_id)
    board.feed.job_changed(job_id)
    board.metrics.transition("cancelled")
    return "cancelled"


async def retry(board: BoardState, job_id: str, *, by: str) -> None:
    """Put a failed or cancelled job back in the queue with a fresh attempt budget."""
    now = time.time()

    def unit(conn: Connection) -> None:
        row = (
            conn.execute(select(jobs.c.state).where(jobs.c.id == job_id).with_for_update())
        ).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        if row.state not in ("failed", "cancelled"):
            raise Conflict(
                f"job {job_id} is {row.state}; only failed or cancelled jobs can be retried"
            )
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == row.state)
            .values(
                state="queued",
                attempts=0,
                failed_by=[],
                not_before=now,
                queued_at=now,
                error=None,
                stage=None,
                progress=0.0,
                finished_at=None,
                farmhand_id=None,
                updated_at=now,
            )
        )
        record_event(conn, job_id, row.state, "queued", message=f"retried by {by}", at=now)

    await board.db.transact(unit)
    board.feed.job_changed(job_id)
    board.feed.work_available()
    board.metrics.transition("queued")


async def set_priority(board: BoardState, job_id: str, priority: int, *, by: str) -> None:
    now = time.time()

    def unit(conn: Connection) -> None:
        result = conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(priority=priority, updated_at=now)
        )
        if result.rowcount != 1:
            raise NotFound(f"no job {job_id}")
        state = (conn.execute(select(jobs.c.state).where(jobs.c.id == job_id))).scalar()
        record_event(
            conn, job_id, state, state, message=f"priority set to {priority} by {by}", at=now
        )

    await board.db.transact(unit)
    board.feed.job_changed(job_id)


# ---------------------------------------------------------------- lost leases (the reaper's verbs)


def requeue_lost(
    conn: Connection, job: Any, *, quarantine_after: int, outcome: str, why: str, now: float
) -> str:
    """A lease that ended without a word from its holder (expired or stalled): the attempt counts;
    the job goes back to the queue at once (it was not at fault) or fails when out of attempts.
    ``job`` is a row with id, state, lease_token, attempts, max_attempts, farmhand_id."""
    out_of_attempts = job.attempts >= job.max_attempts
    to_state = "failed" if out_of_attempts else "queued"
    message = why if not out_of_attempts else f"gave up after {job.attempts} attempts: {why}"
    values: dict[str, Any] = {
        "state": to_state,
        "lease_token": None,
        "lease_expires_at": None,
        "stage": None if to_state == "queued" else "failed",
        "eta_s": None,
        "error": message,
        "updated_at": now,
    }
    if to_state == "queued":
        values.update(not_before=now, queued_at=now, farmhand_id=None, progress=0.0)
    else:
        values.update(finished_at=now)
    result = conn.execute(
        update(jobs)
        .where(
            and_(
                jobs.c.id == job.id,
                jobs.c.lease_token == job.lease_token,
                jobs.c.state.in_(ACTIVE_STATES),
            )
        )
        .values(**values)
    )
    if result.rowcount != 1:
        return job.state  # someone else (another board process) got there first
    _end_attempt(conn, job.lease_token, outcome, at=now, error=why)
    _farmhand_outcome(quarantine_after, conn, job.farmhand_id, bad=True, why=why, at=now)
    name = _farmhand_name(conn, job.farmhand_id)
    record_event(conn, job.id, job.state, to_state, farmhand=name, message=message, at=now)
    return to_state


# ---------------------------------------------------------------- farmhand bookkeeping


def _farmhand_outcome(
    quarantine_after: int,
    conn: Connection,
    farmhand_id: int | None,
    *,
    bad: bool,
    why: str,
    at: float,
) -> None:
    """Count a farmhand's retryable failures and lost leases in a row; quarantine at the limit."""
    if farmhand_id is None:
        return
    if not bad:
        conn.execute(RESET_FAILURES, {"b_id": farmhand_id})
        return
    conn.execute(
        update(farmhands)
        .where(farmhands.c.id == farmhand_id)
        .values(consecutive_failures=farmhands.c.consecutive_failures + 1)
    )
    limit = quarantine_after
    if limit <= 0:
        return
    conn.execute(
        update(farmhands)
        .where(
            farmhands.c.id == farmhand_id,
            farmhands.c.consecutive_failures >= limit,
            farmhands.c.state == "active",
        )
        .values(
            state="quarantined",
            state_reason=f"quarantined after {limit} failed or lost jobs in a row (last: {why})"[
                :2000
            ],
        )
    )


def _farmhand_name(conn: Connection, farmhand_id: int | None) -> str | None:
    if farmhand_id is None:
        return None
    row = FARMHAND_NAME.execute(conn, {"b_id": farmhand_id}).fetchone()
    return row[0] if row else None


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
