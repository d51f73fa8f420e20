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
IMMEDIATE`` transaction (one writer at a time); on PostgreSQL the chosen candidate is locked with
``FOR UPDATE SKIP LOCKED`` before it is taken, so concurrent claimers never wait on, or take,
each other's rows.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import namedtuple
from datetime import UTC, datetime

import msgspec
from sqlalchemy import (
    Float,
    Text,
    and_,
    bindparam,
    exists,
    false,
    insert,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.engine import Connection

from board import lifecycle
from board.db import Prepared, PreparedWrite, among
from board.errors import Forbidden
from board.farm import upsert_farmhand
from board.lifecycle import new_lease_token, record_event, release_forgotten_claims
from board.matching import CODECS, Skills, can_take, skills_of
from board.models import attempts, farmhands, job_tags, jobs
from board.notify import wait_armed
from board.state import BoardState, CheckIn, OnlineFarm
from wire import Claim, ClaimRequest, Release

CANDIDATES = 8  # a page of the queue; the first one is nearly always taken
NOW = bindparam("now", type_=Float)
GRACE_CUT = bindparam("grace_cut", type_=Float)
TAKE = PreparedWrite(update(jobs).where(jobs.c.id == bindparam("b_id"), jobs.c.state == "queued"))
INSERT_ATTEMPT = PreparedWrite(insert(attempts))
FARMHAND_STATE = Prepared(select(farmhands.c.state).where(farmhands.c.id == bindparam("b_id")))
Candidate = namedtuple("Candidate", "id attempts failed_by")
RECHECK_S = 1.0  # how often a paused farmhand's long-poll looks whether it was resumed
# PostgreSQL plans the claim from its statistics of the jobs table, and they lag a bulk submit
# by up to a minute (autovacuum's analyze): believing a few jobs are queued, it reads every
# queued row, sorts them all and takes the first (4.6 ms per claim at 2,000 queued, growing
# with the queue), where walking the claim-order index to the first fit takes 0.03 ms. Bitmap
# scans are that plan's only way in, so the claim's transaction does without them.
WALK_THE_QUEUE_IN_ORDER = Prepared(text("SET LOCAL enable_bitmapscan = off"))


def _eligible(skills: Skills, gpu_codecs: frozenset[str]):
    """The SQL predicate for jobs this farmhand's encoders can do."""
    ors = []
    for codec in CODECS:
        has_hw, has_sw = codec in skills.hardware, codec in skills.software
        is_codec = jobs.c.req_codec == codec
        if has_hw:
            ors.append(and_(is_codec, among(jobs.c.req_encoder, ("gpu", "any"))))
        if has_sw:
            ors.append(and_(is_codec, jobs.c.req_encoder == "cpu"))
            if not has_hw:
                if codec in gpu_codecs:  # a GPU farmhand could take it: wait the grace
                    ors.append(
                        and_(is_codec, jobs.c.req_encoder == "any", jobs.c.queued_at <= GRACE_CUT)
                    )
                else:
                    ors.append(and_(is_codec, jobs.c.req_encoder == "any"))
    if not ors:
        return false()
    return and_(or_(*ors), jobs.c.req_gpu_memory_mb <= skills.gpu_memory_mb)


def _better_left_to_others(
    conn: Connection, row: Candidate, farmhand_id: int, online: OnlineFarm
) -> bool:
    """A farmhand that failed this job skips it while another online farmhand that has not
    failed it could take it (a retry elsewhere is likelier to succeed)."""
    raw = row.failed_by  # JSON text on SQLite (not decoded: most jobs failed nowhere), a list
    if not raw or raw == "[]":  # from asyncpg, which decodes JSON itself
        return False
    failed_by = set(json.loads(raw) if isinstance(raw, str) else raw)
    if farmhand_id not in failed_by:
        return False
    requirements = conn.execute(select(jobs.c.requirements).where(jobs.c.id == row.id)).scalar_one()
    return any(
        can_take(skills, requirements)
        for other, skills in online.skills.items()
        if other != farmhand_id and other not in failed_by
    )


def _locked_query(query, passed: tuple[str, ...]):
    """The first claimable row not locked by another claimer (and not one we passed over)."""
    if passed:
        query = query.where(jobs.c.id.not_in(passed))
    return query.limit(1).with_for_update(skip_locked=True, of=jobs)


@functools.lru_cache(maxsize=256)
def _candidates_query(skills: Skills, gpu_codecs: frozenset[str]):
    """Claimable jobs this farmhand can do, best first (page with ``.offset``; bind ``now`` and
    ``grace_cut``). Built once per kind of farmhand: building the expression costs more than
    running it."""
    foreign_tag = exists().where(job_tags.c.job_id == jobs.c.id)  # with no tags, any tag is
    if skills.tags:
        foreign_tag = foreign_tag.where(~among(job_tags.c.tag, sorted(skills.tags)))
    return (
        select(jobs.c.id, jobs.c.attempts, type_coerce(jobs.c.failed_by, Text).label("failed_by"))
        .where(
            jobs.c.state == "queued",
            jobs.c.not_before <= NOW,
            _eligible(skills, gpu_codecs),
            ~foreign_tag,
        )
        .order_by(jobs.c.priority.desc(), jobs.c.created_at, jobs.c.id)
        .limit(CANDIDATES)
    )


@functools.lru_cache(maxsize=256)
def _first_candidates(skills: Skills, gpu_codecs: frozenset[str]) -> Prepared:
    """The first page of ``_candidates_query``, compiled once: nearly every claim reads only it."""
    return Prepared(_candidates_query(skills, gpu_codecs))


@functools.lru_cache(maxsize=256)
def _first_unlocked(skills: Skills, gpu_codecs: frozenset[str]) -> Prepared:
    """``_locked_query`` with nothing passed over, compiled once (PostgreSQL's every claim)."""
    return Prepared(_locked_query(_candidates_query(skills, gpu_codecs), ()))


def _take(
    conn: Connection,
    row: Candidate,
    farmhand_id: int,
    farmhand_name: str,
    lease_s: float,
    now: float,
    token_id: int,
) -> tuple[str, float] | None:
    """Give the job to the farmhand under a new lease; (lease token, expiry), or None when the
    job is no longer queued."""
    lease_token = new_lease_token(token_id)
    expires = now + lease_s
    attempt = row.attempts + 1
    result = TAKE.execute(
        conn,
        {
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
        {"b_id": row.id},
    )
    if result.rowcount != 1:
        return None
    INSERT_ATTEMPT.execute(
        conn,
        {
            "job_id": row.id,
            "number": attempt,
            "farmhand_id": farmhand_id,
            "lease_token": lease_token,
            "started_at": now,
        },
    )
    record_event(
        conn, row.id, "queued", "claimed", farmhand=farmhand_name, message=f"attempt {attempt}",
        at=now,
    )  # fmt: skip
    return lease_token, expires


async def _try_claim(
    board: BoardState,
    farmhand_id: int,
    farmhand_name: str,
    skills: Skills,
    token_id: int,
) -> Claim | None:
    config = board.config
    now = time.time()
    online = await board.online_farm()
    query = _candidates_query(skills, online.gpu_codecs)
    first_page = _first_candidates(skills, online.gpu_codecs)
    binds = {"now": now, "grace_cut": now - config.gpu_grace_s}
    is_sqlite = board.db.is_sqlite

    def take_best(conn: Connection) -> tuple[str, str, float] | None:
        # An admin may have paused or drained this farmhand while its claim was waiting.
        state = FARMHAND_STATE.execute(conn, {"b_id": farmhand_id}).fetchone()
        if state is None or state[0] != "active":
            return None
        if is_sqlite:
            return take_first_fit(conn)
        return take_first_unlocked(conn)

    def take_first_fit(conn: Connection) -> tuple[str, str, float] | None:
        # SQLite: BEGIN IMMEDIATE made this transaction the only writer; page down the queue.
        offset = 0
        while True:
            if offset:
                rows = conn.execute(query.offset(offset), binds).all()
            else:
                rows = first_page.execute(conn, binds).fetchall()
            for row in map(Candidate._make, rows):
                if _better_left_to_others(conn, row, farmhand_id, online):
                    continue
                taken = _take(conn, row, farmhand_id, farmhand_name, config.lease_s, now, token_id)
                if taken is not None:
                    return (row.id, *taken)
            if len(rows) < CANDIDATES:
                return None
            offset += CANDIDATES  # every one skipped: look further down the queue

    def take_first_unlocked(conn: Connection) -> tuple[str, str, float] | None:
        # PostgreSQL: lock exactly one row, skipping rows other claimers hold, so concurrent
        # claimers neither wait on each other nor find the queue spuriously empty.
        WALK_THE_QUEUE_IN_ORDER.execute(conn)
        passed: list[str] = []
        while True:
            if passed:
                row = conn.execute(_locked_query(query, tuple(passed)), binds).first()
            else:
                row = _first_unlocked(skills, online.gpu_codecs).execute(conn, binds).fetchone()
            if row is None:
                return None
            row = Candidate._make(row)
            if _better_left_to_others(conn, row, farmhand_id, online):
                passed.append(row.id)
                continue
            taken = _take(conn, row, farmhand_id, farmhand_name, config.lease_s, now, token_id)
            if taken is not None:
                return (row.id, *taken)
            passed.append(row.id)

    found = await board.db.transact(take_best)
    if found is None:
        return None
    job_id, lease_token, expires = found
    board.feed.job_changed(job_id)
    board.metrics.transition("claimed")
    return Claim(
        job_id=job_id,
        lease_token=lease_token,
        lease_expires_at=datetime.fromtimestamp(expires, UTC),
        heartbeat_interval_s=config.heartbeat_s,
    )


CHECK_IN_S = 5.0  # a farmhand's row is refreshed at most this often by its claims (and at
# least twice a lease: a board with short leases must not see an idle farmhand flicker offline)


async def _check_in(board: BoardState, request: ClaimRequest, token_id: int) -> CheckIn:
    """Record that the farmhand is alive and what it can do, and requeue any job whose claim
    answer it never got. A farmhand long-polls all day: when nothing changed since its last
    check-in a few seconds ago (same token, same capabilities, no job missing from what it says
    it holds) the database is not touched."""
    caps = msgspec.json.encode(request.capabilities)
    now = time.time()
    last = board.check_ins.get(request.farmhand)
    if (
        last is not None
        and last.token_id == token_id
        and last.capabilities == caps
        and now - last.at < min(CHECK_IN_S, board.config.lease_s / 2)
        and not board.unacknowledged.missing_from(request.farmhand, request.running)
    ):
        return last

    def unit(conn: Connection):
        me = upsert_farmhand(
            conn, request.farmhand, token_id=token_id, now=now, capabilities=request.capabilities
        )
        return me, release_forgotten_claims(conn, me.id, request.running, now)

    me, forgotten = await board.db.transact(unit)
    for job_id in forgotten:
        board.unacknowledged.ack(job_id)
        board.feed.job_changed(job_id)
    if forgotten:
        board.feed.work_available(len(forgotten))
    checked = CheckIn(farmhand_id=me.id, token_id=token_id, capabilities=caps, state=me.state,
                      state_reason=me.state_reason, at=now)  # fmt: skip
    board.check_ins[request.farmhand] = checked
    return checked


async def claim(
    board: BoardState, request: ClaimRequest, *, token_id: int, gone: asyncio.Event | None = None
) -> Claim | None:
    """Hand the farmhand one job, waiting up to ``request.wait_s`` for one to appear; None when
    there is none (or the farmhand is paused, draining or quarantined). ``gone`` is set when the
    farmhand hung up: stop waiting, and give back a job claimed in that instant."""
    started = time.monotonic()
    skills = skills_of(request.capabilities)
    gone = gone or asyncio.Event()

    me = await _check_in(board, request, token_id)
    if me.state == "revoked":
        raise Forbidden(f"farmhand {request.farmhand} was revoked: {me.state_reason}")
    deadline = started + request.wait_s
    may_claim = me.state == "active"
    while not gone.is_set():
        armed = board.feed.work.arm() if may_claim else None
        try:
            if may_claim:
                # Queued for a wake-up *before* looking, so a submit in between is not missed.
                found = await _try_claim(board, me.farmhand_id, request.farmhand, skills, token_id)
                if found is not None:
                    if gone.is_set():  # hung up while we claimed: nobody will run it
                        await lifecycle.release(
                            board,
                            found.job_id,
                            Release(lease_token=found.lease_token, reason="the farmhand hung up"),
                        )
                        return None
                    board.unacknowledged.add(request.farmhand, found.job_id)
                    board.metrics.claim_latency.observe(time.monotonic() - started)
                    return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if armed is not None:
                await _first(wait_armed(armed, left), gone.wait())
                continue
        finally:
            if armed is not None:
                board.feed.work.leave(armed)
        await asyncio.sleep(min(left, RECHECK_S))
        state = await board.db.query(
            lambda conn: FARMHAND_STATE.execute(conn, {"b_id": me.farmhand_id}).fetchone()
        )
        may_claim = state is not None and state[0] == "active"
    return None


async def _first(*waits) -> None:
    """Wait until the first of ``waits`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
