"""Which job does this farmhand get? The claim query, and the long-poll around it.

The rule (docs/architecture.md, "Claim rules"): the highest ``priority``, then oldest, ``queued`` job whose
``not_before`` has passed and whose requirements the farmhand's *verified* encoders meet:

- ``encoder: gpu`` needs a verified hardware encoder for the codec;
- ``encoder: cpu`` needs a verified software encoder;
- ``encoder: any`` goes to hardware at once; to a software-only farmhand only when no capable GPU
  farmhand is online, or after the job has waited ``BOARD_GPU_GRACE_S`` in the queue;
- ``tags`` ⊆ the farmhand's tags, ``min_gpu_memory_mb`` ≤ its largest GPU;
- a farmhand that failed the job is skipped for it while another online farmhand could take it.

Before it looks, the claim checks the farmhand (its token, docs/architecture.md "Farmhands"):
active (not paused, draining, quarantined, revoked) and holding fewer jobs than the slots it
declared. Exactly one farmhand gets a job: the candidate is read ``FOR UPDATE SKIP LOCKED`` and
taken by ``lifecycle.grant_lease`` in the same transaction (on SQLite that transaction began
with ``BEGIN IMMEDIATE``, so it is the only writer; on PostgreSQL concurrent claimers skip each
other's rows and never wait on them). The farmhand's own row is locked first, so two claims of
one token are counted against its slots one after the other.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Float, and_, bindparam, exists, false, func, or_, select
from sqlalchemy.engine import Connection

from board.domain import lifecycle, splits
from board.domain.farmhands import ClaimCheckIn, checked_in, claim_check_in, recent_check_in
from board.domain.lifecycle import Moved, announce
from board.domain.matching import Skills, can_take, skills_of
from board.domain.tokens import Principal
from board.errors import Forbidden
from board.infra.db import walk_indexes_in_order
from board.infra.models import farmhands, job_tags, jobs, tokens
from board.infra.notify import wait_armed
from board.state import BoardState, CheckIn, OnlineFarm
from timeline.spec import CODECS
from wire import ACTIVE_STATES, Claim, ClaimRequest, Release

RECHECK_S = 1.0  # how often a farmhand that may not claim now looks whether that changed


class Refusal(enum.Enum):
    """Why a claim took nothing although the farmhand is allowed to wait for work."""

    NO_JOB = "no job for this farmhand now"
    STOPPED = "the farmhand is paused, draining or quarantined"
    FULL = "the farmhand holds as many jobs as its slots"


def _eligible(skills: Skills, gpu_codecs: frozenset[str]):
    """The SQL predicate for jobs this farmhand's encoders can do."""
    grace_cut = bindparam("grace_cut", type_=Float)
    ors = []
    for codec in CODECS:
        has_hw, has_sw = codec in skills.hardware, codec in skills.software
        is_codec = jobs.c.req_codec == codec
        if has_hw:
            ors.append(and_(is_codec, jobs.c.req_encoder.in_(("gpu", "any"))))
        if has_sw:
            ors.append(and_(is_codec, jobs.c.req_encoder == "cpu"))
            if not has_hw:
                if codec in gpu_codecs:  # a GPU farmhand could take it: wait the grace
                    ors.append(
                        and_(is_codec, jobs.c.req_encoder == "any", jobs.c.queued_at <= grace_cut)
                    )
                else:
                    ors.append(and_(is_codec, jobs.c.req_encoder == "any"))
    if not ors:
        return false()
    return and_(
        or_(*ors),
        jobs.c.req_gpu_memory_mb <= skills.gpu_memory_mb,
        # a part of a split job needs the very encoder its split was planned with
        or_(
            jobs.c.req_encoder_name.is_(None), jobs.c.req_encoder_name.in_(sorted(skills.encoders))
        ),
    )


@functools.lru_cache(maxsize=256)
def _first_candidate(skills: Skills, gpu_codecs: frozenset[str]):
    """The best claimable job, its row locked (skipping rows other claimers hold)."""
    return _candidates(skills, gpu_codecs).limit(1).with_for_update(skip_locked=True, of=jobs)


@functools.lru_cache(maxsize=256)
def _candidates(skills: Skills, gpu_codecs: frozenset[str]):
    """Claimable jobs this farmhand can do, best first (bind ``now`` and ``grace_cut``). Built
    once per kind of farmhand: building the expression costs more than running it."""
    foreign_tag = exists().where(job_tags.c.job_id == jobs.c.id)  # with no tags, any tag is
    if skills.tags:
        foreign_tag = foreign_tag.where(job_tags.c.tag.not_in(sorted(skills.tags)))
    return (
        select(
            jobs.c.id,
            jobs.c.attempts,
            jobs.c.failed_by,
            jobs.c.requirements,
            jobs.c.kind,
            jobs.c.split,
            jobs.c.parent_id,
        )
        .where(
            jobs.c.state == "queued",
            jobs.c.not_before <= bindparam("now", type_=Float),
            _eligible(skills, gpu_codecs),
            ~foreign_tag,
        )
        .order_by(jobs.c.priority.desc(), jobs.c.created_at, jobs.c.id)
    )


def _better_left_to_others(row, farmhand_id: int, online: OnlineFarm) -> bool:
    """A farmhand that failed this job skips it while another online farmhand that has not
    failed it could take it (a retry elsewhere is likelier to succeed)."""
    failed_by = set(row.failed_by or ())
    if farmhand_id not in failed_by:
        return False
    return any(
        can_take(skills, row.requirements)
        for other, skills in online.skills.items()
        if other != farmhand_id and other not in failed_by
    )


_FARMHAND = (
    select(farmhands.c.state, tokens.c.revoked_at)
    .select_from(farmhands.join(tokens, tokens.c.id == farmhands.c.token_id))
    .where(farmhands.c.id == bindparam("b_id"))
)
_FARMHAND_LOCKED = _FARMHAND.with_for_update(of=farmhands)
_HELD_COUNT = (
    select(func.count())
    .select_from(jobs)
    .where(jobs.c.farmhand_id == bindparam("b_id"), jobs.c.state.in_(ACTIVE_STATES))
)


def _may_claim(conn: Connection, farmhand_id: int, slots: int, *, lock: bool) -> Refusal | None:
    """Whether the farmhand may take a job now; with ``lock``, its row stays locked for the rest
    of the claim's transaction."""
    me = conn.execute(_FARMHAND_LOCKED if lock else _FARMHAND, {"b_id": farmhand_id}).first()
    if me is None or me.revoked_at is not None or me.state == "revoked":
        raise Forbidden("this farmhand's token was revoked")
    if me.state != "active":
        return Refusal.STOPPED
    held = conn.execute(_HELD_COUNT, {"b_id": farmhand_id}).scalar_one()
    return Refusal.FULL if held >= slots else None


def _split_among_idle(
    conn: Connection, board: BoardState, row, farmhand_id: int, skills: Skills, now: float
) -> list[str]:
    """Split the job of ``row`` when farmhands waiting for work on this board could take its
    parts (docs/architecture.md, "Split render"): its pieces' ids, the first for this claimer;
    empty when it is not split. The parts are encoded with this farmhand's encoder for the job,
    so only farmhands that verified the same one are counted (and may take them)."""
    requirements = row.requirements
    encoder = skills.first_encoder(requirements.get("codec"), requirements.get("encoder", "any"))
    if encoder is None:
        return []
    needs = {**requirements, "encoder_name": encoder}
    helpers = [
        other
        for other, their in list(board.idle.items())
        if other != farmhand_id and can_take(their, needs)
    ]
    if not helpers:
        return []
    job = conn.execute(select(jobs).where(jobs.c.id == row.id)).one()
    return splits.split_job(
        conn, job, renderers=1 + len(helpers), encoder=encoder,
        min_work_s=board.config.split_min_work_s, now=now,
    )  # fmt: skip


class Taken(NamedTuple):
    """The job a claim took, its lease, and the jobs its split moved."""

    job_id: str
    lease_token: str
    expires: float
    moved: list[Moved]


async def _try_claim(
    board: BoardState, request: ClaimRequest, who: Principal, me: CheckIn | None, skills: Skills
) -> tuple[CheckIn, Claim | Refusal]:
    """One look for a job. ``me``: the farmhand's recent check-in, or None when the claim must
    check in first; it then checks in inside the unit that takes the job (one turn of the
    writer, not two: a farmhand back from a job always checks in). Returns the check-in and the
    claim or why there is none."""
    config = board.config
    slots = request.capabilities.slots
    now = time.time()
    online = await board.online_farm()
    candidates = _candidates(skills, online.gpu_codecs)
    first = _first_candidate(skills, online.gpu_codecs)
    binds = {"now": now, "grace_cut": now - config.gpu_grace_s}

    def look(conn: Connection) -> Refusal | None:
        refused = _may_claim(conn, me.farmhand_id, slots, lock=False)
        if refused is not None:
            return refused
        return None if conn.execute(first, binds).first() else Refusal.NO_JOB

    def take_best(conn: Connection, farmhand_id: int) -> Taken | Refusal:
        refused = _may_claim(conn, farmhand_id, slots, lock=True)
        if refused is not None:
            return refused
        walk_indexes_in_order(conn)
        passed: list[str] = []
        while True:
            query = first
            if passed:  # rare: every job before these was failed by this farmhand
                query = (
                    candidates.where(jobs.c.id.not_in(passed))
                    .limit(1)
                    .with_for_update(skip_locked=True, of=jobs)
                )
            row = conn.execute(query, binds).first()
            if row is None:
                return Refusal.NO_JOB
            passed.append(row.id)
            if _better_left_to_others(row, farmhand_id, online):
                continue
            job_id, attempt, moved = row.id, row.attempts + 1, []
            if splits.may_split(row):
                pieces = _split_among_idle(conn, board, row, farmhand_id, skills, now)
                if pieces:
                    job_id, attempt = pieces[0], 1
                    moved = [Moved(row.id, "running"), *(Moved(p, "queued") for p in pieces[1:])]
            taken = lifecycle.grant_lease(
                conn,
                job_id,
                attempt,
                farmhand_id=farmhand_id,
                farmhand=request.farmhand,
                token_id=who.token_id,
                lease_s=config.lease_s,
                now=now,
            )
            if taken is not None:
                return Taken(job_id, *taken, moved)

    def check_in_and_take(conn: Connection) -> tuple[ClaimCheckIn, Taken | Refusal]:
        done = claim_check_in(conn, request, who, now)
        if done.me.state == "revoked":  # checked_in refuses it, with the board's reason
            return done, Refusal.STOPPED
        return done, take_best(conn, done.me.id)

    if me is None:
        done, found = await board.db.transact(check_in_and_take)
        me = checked_in(board, request, who, done)
    else:
        # A reader answers the claims that cannot take anything (most of an idle fleet's), so
        # only a claim with something to take waits for the writer; which job it gets is
        # decided there.
        found = await board.db.query(look) or await board.db.transact(
            lambda conn: take_best(conn, me.farmhand_id)
        )
    if isinstance(found, Refusal):
        return me, found
    announce(board, [*found.moved, Moved(found.job_id, "claimed")])
    return me, Claim(
        job_id=found.job_id,
        lease_token=found.lease_token,
        lease_expires_at=datetime.fromtimestamp(found.expires, UTC),
        heartbeat_interval_s=config.heartbeat_s,
    )


async def claim(
    board: BoardState, request: ClaimRequest, who: Principal, *, gone: asyncio.Event | None = None
) -> Claim | None:
    """Hand the farmhand one job, waiting up to ``request.wait_s`` for one to appear; None when
    there is none for it now (or it is paused, draining, quarantined or full). ``gone`` is set
    when the farmhand hung up: stop waiting, and give back a job claimed in that instant.
    Forbidden when its token is revoked, also while it waits."""
    started = time.monotonic()
    skills = skills_of(request.capabilities)
    gone = gone or asyncio.Event()
    me = recent_check_in(board, request, who)
    deadline = started + request.wait_s
    while not gone.is_set():
        armed = board.feed.work.arm()  # queued for a wake-up *before* looking: none is missed
        try:
            me, found = await _try_claim(board, request, who, me, skills)
            if isinstance(found, Claim):
                if gone.is_set():  # hung up while we claimed: nobody will run it
                    why = Release(lease_token=found.lease_token, reason="the farmhand hung up")
                    await lifecycle.release(board, found.job_id, why, who)
                    return None
                board.unacknowledged.add(who.token_id, found.job_id)
                board.metrics.claim_latency.observe(time.monotonic() - started)
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # No job: the next one that becomes claimable wakes us. Stopped or full: what
            # changes that (an admin's resume, a job of ours ending) is rarer; look again soon.
            wait = left if found is Refusal.NO_JOB else min(left, RECHECK_S)
            if found is Refusal.NO_JOB:  # idle: a job split now may give it a part
                board.idle[me.farmhand_id] = skills
            await _first(wait_armed(armed, wait), gone.wait())
        finally:
            board.feed.work.leave(armed)
            if me is not None:
                board.idle.pop(me.farmhand_id, None)
    return None


async def _first(*waits) -> None:
    """Wait until the first of ``waits`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
