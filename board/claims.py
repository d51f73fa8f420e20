"""Which job does this farmhand get? The claim query, and the long-poll around it.

The rule (DESIGN.md "Claim"): the highest ``priority``, then oldest, ``queued`` job whose
``not_before`` has passed and whose requirements the farmhand's *verified* encoders meet:

- ``encoder: gpu`` needs a verified hardware encoder for the codec;
- ``encoder: cpu`` needs a verified software encoder;
- ``encoder: any`` goes to hardware at once; to a software-only farmhand only when no capable GPU
  farmhand is online, or after the job has waited ``BOARD_GPU_GRACE_S`` in the queue;
- ``tags`` ⊆ the farmhand's tags, ``min_gpu_memory_mb`` ≤ its largest GPU;
- a farmhand that failed the job is skipped for it while another online farmhand could take it.

Exactly one farmhand gets a job: on SQLite the whole select-and-update runs in a ``BEGIN
IMMEDIATE`` transaction (one writer at a time); on PostgreSQL the candidates are locked with
``FOR UPDATE SKIP LOCKED``, so concurrent claimers never wait on, or take, each other's rows.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import and_, false, insert, or_, select, update

from board import lifecycle
from board.errors import Forbidden
from board.farm import upsert_farmhand
from board.lifecycle import record_event, release_forgotten_claims
from board.matching import CODECS, Skills, skills_of, tags_satisfied
from board.models import attempts, farmhands, jobs
from board.notify import wait_armed
from board.state import BoardState, OnlineFarm
from wire import Claim, ClaimRequest, Release

CANDIDATES = 32
RECHECK_S = 1.0  # long-poll re-check for work signalled by other processes or `not_before`


def _eligible(skills: Skills, online: OnlineFarm, now: float, grace_s: float):
    """The SQL predicate for jobs this farmhand's encoders can do."""
    ors = []
    for codec in CODECS:
        has_hw, has_sw = codec in skills.hardware, codec in skills.software
        is_codec = jobs.c.req_codec == codec
        if has_hw:
            ors.append(and_(is_codec, jobs.c.req_encoder.in_(("gpu", "any"))))
        if has_sw:
            ors.append(and_(is_codec, jobs.c.req_encoder == "cpu"))
            if not has_hw:
                if codec in online.gpu_codecs:  # a GPU farmhand could take it: wait the grace
                    ors.append(
                        and_(
                            is_codec, jobs.c.req_encoder == "any", jobs.c.queued_at <= now - grace_s
                        )
                    )
                else:
                    ors.append(and_(is_codec, jobs.c.req_encoder == "any"))
    if not ors:
        return false()
    return and_(or_(*ors), jobs.c.req_gpu_memory_mb <= skills.gpu_memory_mb)


async def _try_claim(
    board: BoardState,
    farmhand_id: int,
    farmhand_name: str,
    skills: Skills,
) -> Claim | None:
    config = board.config
    now = time.time()
    online = await board.online_farm()
    query = (
        select(
            jobs.c.id,
            jobs.c.state,
            jobs.c.attempts,
            jobs.c.failed_by,
            jobs.c.req_tags,
            jobs.c.requirements,
        )
        .where(
            jobs.c.state == "queued",
            jobs.c.not_before <= now,
            _eligible(skills, online, now, config.gpu_grace_s),
        )
        .order_by(jobs.c.priority.desc(), jobs.c.created_at, jobs.c.id)
        .limit(CANDIDATES)
    )
    if not board.db.is_sqlite:
        query = query.with_for_update(skip_locked=True, of=jobs)
    async with board.db.write() as conn:
        for row in (await conn.execute(query)).all():
            if row.req_tags and not tags_satisfied(row.requirements.get("tags"), skills):
                continue
            failed_by = row.failed_by or []
            if farmhand_id in failed_by and (online.active_ids - set(failed_by) - {farmhand_id}):
                continue  # someone who has not failed it yet is online: leave it to them
            lease_token = secrets.token_urlsafe(24)
            expires = now + config.lease_s
            attempt = row.attempts + 1
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.id == row.id, jobs.c.state == "queued")
                .values(
                    state="claimed",
                    lease_token=lease_token,
                    lease_expires_at=expires,
                    farmhand_id=farmhand_id,
                    attempts=attempt,
                    claimed_at=now,
                    progress_at=now,
                    stage="claimed",
                    progress=0.0,
                    updated_at=now,
                )
            )
            if result.rowcount != 1:
                continue
            await conn.execute(
                insert(attempts).values(
                    job_id=row.id,
                    number=attempt,
                    farmhand_id=farmhand_id,
                    lease_token=lease_token,
                    started_at=now,
                )
            )
            await record_event(
                conn,
                row.id,
                "queued",
                "claimed",
                farmhand=farmhand_name,
                message=f"attempt {attempt}",
                at=now,
            )
            break
        else:
            return None
    board.feed.job_changed(row.id)
    board.metrics.transition("claimed")
    return Claim(
        job_id=row.id,
        lease_token=lease_token,
        lease_expires_at=datetime.fromtimestamp(expires, UTC),
        heartbeat_interval_s=config.heartbeat_s,
    )


async def claim(
    board: BoardState, request: ClaimRequest, *, token_id: int, gone: asyncio.Event | None = None
) -> Claim | None:
    """Hand the farmhand one job, waiting up to ``request.wait_s`` for one to appear; None when
    there is none (or the farmhand is paused, draining or quarantined). ``gone`` is set when the
    farmhand hung up: stop waiting, and give back a job claimed in that instant."""
    started = time.monotonic()
    skills = skills_of(request.capabilities)
    gone = gone or asyncio.Event()
    async with board.db.write() as conn:
        now = time.time()
        me = await upsert_farmhand(
            conn, request.farmhand, token_id=token_id, now=now, capabilities=request.capabilities
        )
        forgotten = await release_forgotten_claims(board, conn, me.id, request.running, now)
    for job_id in forgotten:
        board.feed.job_changed(job_id)
    if forgotten:
        board.feed.work_available()
    if me.state == "revoked":
        raise Forbidden(f"farmhand {request.farmhand} was revoked: {me.state_reason}")
    deadline = started + request.wait_s
    may_claim = me.state == "active"
    while not gone.is_set():
        if may_claim:
            # Arm the wake-up before looking, so a submit between the look and the wait is seen.
            armed = board.feed.work.arm()
            found = await _try_claim(board, me.id, request.farmhand, skills)
            if found is not None:
                if gone.is_set():  # hung up while we claimed: nobody will run it
                    await lifecycle.release(
                        board,
                        found.job_id,
                        Release(lease_token=found.lease_token, reason="the farmhand hung up"),
                    )
                    return None
                board.metrics.claim_latency.observe(time.monotonic() - started)
                return found
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if may_claim:
            await _first(wait_armed(armed, min(left, RECHECK_S)), gone.wait())
        else:
            await asyncio.sleep(min(left, RECHECK_S))
            async with board.db.read() as conn:
                state = (
                    await conn.execute(select(farmhands.c.state).where(farmhands.c.id == me.id))
                ).scalar()
            may_claim = state == "active"
    return None


async def _first(*waits) -> None:
    """Wait until the first of ``waits`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
