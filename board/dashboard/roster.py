"""The farmhands view: who is there, what each can do, what each is doing, and the admin's
pause / resume / drain / revoke."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from board.dashboard.render import macro
from board.dashboard.snapshot import Snapshot
from board.dashboard.summary import FarmSummary, farm_summary
from board.domain.farmhands import list_farmhands
from board.domain.tokens import Principal
from board.infra.models import jobs
from board.state import BoardState
from wire import FarmhandView

HARDWARE_MARKS = ("nvenc", "qsv", "vaapi", "amf", "videotoolbox", "v4l2m2m")


@dataclass(frozen=True)
class CurrentJob:
    id: str
    title: str
    state: str
    stage: str | None
    progress: float
    visible: bool  # a submitter sees only that a farmhand is busy with someone else's job


@dataclass(frozen=True)
class Farmhand:
    view: FarmhandView
    jobs: list[CurrentJob]

    @property
    def status(self) -> str:
        """One word for the badge: revoked, quarantined, paused, draining, owner-paused,
        offline, busy or idle."""
        v = self.view
        if v.state in ("revoked", "quarantined", "paused", "draining"):
            return v.state
        if not v.online:
            return "offline"
        if v.paused_by_owner:
            return "owner-paused"
        return "busy" if self.jobs else "idle"

    @property
    def why(self) -> str:
        """Why it does not take work, in the words of whoever stopped it."""
        v = self.view
        if v.state != "active" and v.reason:
            return v.reason
        if v.paused_by_owner:
            return v.owner_reason or "its owner is using the machine"
        return ""

    def is_hardware(self, encoder: str) -> bool:
        return any(mark in encoder for mark in HARDWARE_MARKS)


@dataclass(frozen=True)
class Roster:
    farmhands: list[Farmhand]
    summary: FarmSummary
    can_manage: bool


async def load_roster(board: BoardState, who: Principal) -> Roster:
    views = await list_farmhands(board)
    ids = [job_id for v in views for job_id in v.current_jobs]
    held: dict[str, CurrentJob] = {}
    if ids:
        query = select(
            jobs.c.id,
            jobs.c.title,
            jobs.c.state,
            jobs.c.stage,
            jobs.c.progress,
            jobs.c.submitter_id,
        ).where(jobs.c.id.in_(ids))
        for r in await board.db.query(lambda conn: conn.execute(query).all()):
            visible = who.is_admin or r.submitter_id == who.submitter_id
            held[r.id] = CurrentJob(
                id=r.id,
                title=r.title if visible else "",
                state=r.state,
                stage=r.stage,
                progress=r.progress or 0.0,
                visible=visible,
            )
    farmhands = [
        Farmhand(view=v, jobs=[held[j] for j in v.current_jobs if j in held]) for v in views
    ]
    return Roster(
        farmhands=farmhands, summary=await farm_summary(board, who), can_manage=who.is_admin
    )


def roster_snapshot(roster: Roster) -> Snapshot:
    row = macro("_farmhands.html", "farmhand_row")
    rows = [(f.view.token, str(row(f, roster.can_manage))) for f in roster.farmhands]
    if not rows:
        rows = [("empty", str(macro("_farmhands.html", "empty_row")()))]
    return Snapshot(
        regions={"summary": str(macro("_summary.html", "summary")(roster.summary))},
        lists={"farmhand-rows": rows},
    )
