"""The job page: the compilation as submitted, its live state, every attempt and event, the
output to watch."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from sqlalchemy import select
from sqlalchemy.engine import Connection

from board.dashboard.render import macro
from board.dashboard.snapshot import Snapshot
from board.domain.jobs import get_job, job_history
from board.domain.tokens import Principal
from board.infra.models import jobs, media
from board.state import BoardState
from timeline.spec import Compilation, Source
from wire import AttemptView, JobEvent, JobView

EVENTS_SHOWN = 200  # the newest; a job retried all week keeps a readable page
CLIPS_SHOWN = 200


@dataclass(frozen=True)
class MediaInfo:
    filename: str
    duration_s: float | None


@dataclass(frozen=True)
class JobDetail:
    job: JobView
    events: list[JobEvent]
    events_hidden: int
    attempts: list[AttemptView]
    compilation: Compilation | None
    media: dict[str, MediaInfo]

    def source_name(self, source: Source | None) -> str:
        """How a source reads on the page: the uploaded file's name, or the URL."""
        if source is None:
            return "—"
        if source.media is not None:
            found = self.media.get(source.media)
            return found.filename if found else f"media {source.media}"
        return source.url or source.path or "—"

    @property
    def shown_clips(self) -> list:
        return self.compilation.clips[:CLIPS_SHOWN] if self.compilation else []

    @property
    def hidden_clips(self) -> int:
        return len(self.compilation.clips) - CLIPS_SHOWN if self.compilation else 0

    def source_duration(self, source: Source) -> float | None:
        found = self.media.get(source.media) if source.media else None
        return found.duration_s if found else None


def _read_compilation(conn: Connection, job_id: str):
    row = conn.execute(
        select(jobs.c.compilation, jobs.c.submitter_id).where(jobs.c.id == job_id)
    ).first()
    if row is None:
        return None, {}
    try:
        compilation = msgspec.convert(row.compilation, Compilation)
    except (msgspec.ValidationError, ValueError):
        return None, {}  # written by an older board: the page still shows the rest
    ids = {s.media for s in compilation.sources() if s.media}
    found = {}
    if ids:
        rows = conn.execute(
            select(media.c.id, media.c.filename, media.c.duration_s).where(
                media.c.id.in_(ids), media.c.submitter_id == row.submitter_id
            )
        )
        found = {r.id: MediaInfo(r.filename, r.duration_s) for r in rows}
    return compilation, found


async def _compilation(board: BoardState, job_id: str):
    return await board.db.query(lambda conn: _read_compilation(conn, job_id))


async def load_job_detail(
    board: BoardState, who: Principal, job_id: str, *, with_compilation: bool = True
) -> JobDetail:
    """The job as ``who`` may see it (NotFound otherwise)."""
    job = await get_job(board, who, job_id)
    events, attempts = await job_history(board, who, job_id)
    compilation, names = (None, {})
    if with_compilation:
        compilation, names = await _compilation(board, job_id)
    hidden = max(0, len(events) - EVENTS_SHOWN)
    return JobDetail(
        job=job,
        events=list(reversed(events[hidden:])),  # newest first
        events_hidden=hidden,
        attempts=attempts,
        compilation=compilation,
        media=names,
    )


def job_snapshot(detail: JobDetail) -> Snapshot:
    regions = {
        name: str(macro("_job.html", name.replace("-", "_"))(detail))
        for name in (
            "job-head",
            "job-progress",
            "job-output",
            "job-parts",
            "job-attempts",
            "job-events",
        )
    }
    return Snapshot(regions=regions)
