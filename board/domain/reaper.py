"""The lease reaper: puts back jobs whose farmhand went silent or whose render hung.

- **Expired lease**: no heartbeat for ``BOARD_LEASE_S`` (farmhand died, network gone) → requeued
  at once with the attempt counted, or failed when out of attempts.
- **Stall**: heartbeats keep coming but progress has not advanced for ``BOARD_STALL_S`` (a hung
  ffmpeg) → treated like a lost lease; the farmhand's next heartbeat gets 409 and it aborts.
  Fetching and uploading are not watched: a slow link is not a hung render.

Every board process runs one; the fenced update in ``lifecycle.requeue_lost`` makes concurrent
reapers harmless (several board hosts on one PostgreSQL). The same loop runs the janitor
(``board.domain.janitor``) and the outputs' retention (``board.domain.deletions``) now and then.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.engine import Connection

from board.domain.deletions import remove_expired_outputs
from board.domain.janitor import sweep_dead_uploads
from board.domain.lifecycle import TRANSFER_STAGES, Moved, announce, requeue_lost
from board.domain.sessions import remove_dead_sessions
from board.infra.models import jobs
from board.state import BoardState
from wire import ACTIVE_STATES

log = logging.getLogger("board.domain.reaper")
BATCH = 100


async def reap_expired_leases(board: BoardState) -> int:
    """One pass: requeue (or fail) every expired or stalled job. Returns how many moved."""
    now = time.time()
    expired = and_(jobs.c.state.in_(ACTIVE_STATES), jobs.c.lease_expires_at < now)
    stalled = and_(
        jobs.c.state == "running",
        jobs.c.progress_at < now - board.config.stall_s,
        or_(jobs.c.stage.is_(None), jobs.c.stage.not_in(TRANSFER_STAGES)),
    )
    query = (
        select(jobs.c.id, jobs.c.lease_token, jobs.c.lease_expires_at)
        .where(or_(expired, stalled))
        .limit(BATCH)
    )
    candidates = await board.db.query(lambda conn: conn.execute(query).all())
    if not candidates:
        return 0
    quarantine_after = board.config.quarantine_after

    def unit(conn: Connection) -> list[Moved]:
        moved = []
        for job in candidates:
            if job.lease_expires_at is not None and job.lease_expires_at < now:
                outcome, why = "lost", "lease expired: the farmhand stopped sending heartbeats"
            else:
                outcome = "stalled"
                why = f"stalled: no progress for {board.config.stall_s:g} s"
            also: list[tuple[str, str]] = []  # a split abandoned for a piece out of attempts
            to_state = requeue_lost(
                conn, job, quarantine_after=quarantine_after, outcome=outcome, why=why, now=now,
                also=also,
            )  # fmt: skip
            if to_state is not None:
                moved.append(Moved(job.id, to_state))
            moved += [Moved(job_id, state) for job_id, state in also]
        return moved

    moved = await board.db.transact(unit)
    announce(board, moved)
    for move in moved:
        log.info("job %s: lease lost, now %s", move.job_id, move.to_state)
    return len(moved)


CLAIMABLE = select(func.count()).select_from(
    select(jobs.c.id)
    .where(jobs.c.state == "queued", jobs.c.not_before <= bindparam("now"))
    .limit(64)
    .subquery()
)


async def nudge_waiting_claimers(board: BoardState) -> None:
    """Wake waiting claimers for claimable jobs no wake-up announced: submitted through another
    board process, or a retry whose backoff just ran out. One cheap query, only while someone
    waits."""
    if not len(board.feed.work):
        return
    now = time.time()
    claimable = await board.db.query(lambda conn: conn.execute(CLAIMABLE, {"now": now}).scalar())
    if claimable:
        board.feed.work_available(claimable)


async def run_reaper(board: BoardState) -> None:
    """Reap forever, every ``BOARD_REAP_INTERVAL_S``; every ``BOARD_JANITOR_INTERVAL_S``, sweep
    the files of dead leases, remove outputs past ``BOARD_OUTPUT_RETENTION_DAYS`` and forget
    expired or revoked dashboard sessions. Errors are logged, never fatal."""
    swept_at = time.monotonic()
    while True:
        try:
            await reap_expired_leases(board)
            await nudge_waiting_claimers(board)
            if time.monotonic() - swept_at >= board.config.janitor_interval_s:
                swept_at = time.monotonic()
                await sweep_dead_uploads(board)
                await remove_expired_outputs(board)
                await remove_dead_sessions(board.db)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reaper pass failed; trying again")
        await asyncio.sleep(board.config.reap_interval_s)
