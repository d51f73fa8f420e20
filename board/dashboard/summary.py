"""The farm at a glance: jobs per state, what got done in the last hour, how long jobs wait in
the queue, how many farmhands are there to work. Scoped like the job list: an admin sees the
whole farm, a submitter their own jobs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.engine import Connection

from board.domain.tokens import Principal
from board.infra.models import farmhands, jobs, usage
from board.state import BoardState
from wire import ACTIVE_STATES, JOB_STATES

WINDOW_S = 3600.0
WAIT_SAMPLE = 5000  # the newest claims in the window: enough for a median, bounded work


@dataclass(frozen=True)
class FarmSummary:
    counts: dict[str, int]
    done_last_hour: int
    render_s_last_hour: float
    wait_median_s: float | None
    wait_p90_s: float | None
    oldest_queued_s: float | None
    farmhands_online: int
    farmhands_working: int
    farmhands_stopped: int  # online but paused, draining or quarantined (by an admin or owner)
    farmhands_total: int
    at: float = field(default_factory=time.time)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def active(self) -> int:
        return self.counts["claimed"] + self.counts["running"]


def _scoped(who: Principal, query, column):
    return query if who.is_admin else query.where(column == who.submitter_id)


def _job_counts(conn: Connection, who: Principal) -> dict[str, int]:
    query = _scoped(
        who, select(jobs.c.state, func.count()).group_by(jobs.c.state), jobs.c.submitter_id
    )
    counts = dict.fromkeys(JOB_STATES, 0)
    counts.update({state: n for state, n in conn.execute(query).all()})
    return counts


def _queue_waits(who: Principal, since: float):
    """Seconds each job claimed in the window waited since it (last) entered the queue (the
    newest WAIT_SAMPLE claims), as a subquery with one column, ``wait``."""
    wait = (jobs.c.claimed_at - jobs.c.queued_at).label("wait")
    return _scoped(
        who,
        select(wait)
        .where(jobs.c.claimed_at >= since, jobs.c.claimed_at >= jobs.c.queued_at)
        .order_by(jobs.c.claimed_at.desc())
        .limit(WAIT_SAMPLE),
        jobs.c.submitter_id,
    ).subquery()


def sql_percentiles(conn: Connection, sample, qs: tuple[float, ...]) -> list[float | None]:
    """The ``q`` quantiles (0–1, linear interpolation, as ``statistics.quantiles(n=100,
    method="inclusive")``) of the one-column subquery ``sample``; None where it is empty. The
    database sorts and Python reads two values per quantile: a dashboard asks several times a
    second, and thousands of rows through SQLAlchemy held the interpreter lock for it."""
    (value,) = sample.c
    n = conn.execute(select(func.count()).select_from(sample)).scalar_one()
    out: list[float | None] = []
    for q in qs:
        if n == 0:
            out.append(None)
            continue
        position = round(q * 100) / 100 * (n - 1)  # as statistics.quantiles(n=100, inclusive)
        low = int(position)
        pair = conn.execute(select(value).order_by(value).offset(low).limit(2)).scalars().all()
        below = float(pair[0])
        above = float(pair[-1])
        out.append(below + (above - below) * (position - low))
    return out


def _count(condition) -> ColumnElement:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _farmhand_counts(conn: Connection, online_since: float) -> tuple[int, int, int, int]:
    """(online, working, stopped, total) counted by the database: a fleet's worth of rows never
    crosses into Python (the dashboard stream asks several times a second)."""
    online = farmhands.c.last_seen_at > online_since
    stopped = or_(farmhands.c.state != "active", farmhands.c.owner_paused.is_(True))
    n_online, n_stopped, n_total = conn.execute(
        select(
            _count(online), _count(and_(online, stopped)), _count(farmhands.c.state != "revoked")
        )
    ).one()
    working = conn.execute(
        select(func.count(func.distinct(jobs.c.farmhand_id)))
        .select_from(jobs.join(farmhands, farmhands.c.id == jobs.c.farmhand_id))
        .where(jobs.c.state.in_(ACTIVE_STATES), online)
    ).scalar_one()
    return int(n_online), int(working), int(n_stopped), int(n_total)


async def farm_summary(board: BoardState, who: Principal) -> FarmSummary:
    now = time.time()
    since = now - WINDOW_S

    def read(conn: Connection) -> FarmSummary:  # on a reader thread, off the event loop
        counts = _job_counts(conn, who)
        done = conn.execute(
            _scoped(
                who,
                select(func.count(), func.coalesce(func.sum(usage.c.render_seconds), 0.0)).where(
                    usage.c.at >= since
                ),
                usage.c.submitter_id,
            )
        ).one()
        wait_median, wait_p90 = sql_percentiles(conn, _queue_waits(who, since), (0.5, 0.9))
        oldest = conn.execute(
            _scoped(
                who,
                select(func.min(jobs.c.queued_at)).where(jobs.c.state == "queued"),
                jobs.c.submitter_id,
            )
        ).scalar()
        online, working, stopped, total = _farmhand_counts(conn, now - board.config.lease_s)
        return FarmSummary(
            counts=counts,
            done_last_hour=int(done[0]),
            render_s_last_hour=float(done[1] or 0.0),
            wait_median_s=wait_median,
            wait_p90_s=wait_p90,
            oldest_queued_s=None if oldest is None else max(0.0, now - oldest),
            farmhands_online=online,
            farmhands_working=working,
            farmhands_stopped=stopped,
            farmhands_total=total,
            at=now,
        )

    return await board.db.query(read)
