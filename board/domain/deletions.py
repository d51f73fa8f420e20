"""What a submitter (or an admin) may delete, what goes with it, and how long outputs are kept.

- **Media**: refused (409) while a job that is not final uses it, or while it is a submitter's
  forced watermark: a farmhand would find it gone mid-render. Final jobs that used it keep their
  history; a retry of one of them is refused (409) with a message naming the missing media.
- **A job**: only a final one (succeeded, failed, cancelled); a queued or running job is
  cancelled first (409 says so), so a delete never drops work a farmhand is doing. Its events,
  attempts and output go with it. The render seconds it used stay charged to the month.
- **An output**: the video and its thumbnail; the job stays succeeded, without an output.
- **Retention**: with ``BOARD_OUTPUT_RETENTION_DAYS`` set, the janitor removes outputs older
  than that (``remove_expired_outputs``), as a delete would.

Rows go first, in one transaction; files after it commits, so nothing serves a file whose row is
still there but half gone. A crash between the two leaves an output file that the janitor's
sweep of dead uploads removes (``board.domain.janitor``: no committed row names it).
Everything deleted stops counting against the storage quota at once (``limits.storage_used``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from board.domain.lifecycle import record_event
from board.domain.tokens import Principal
from board.errors import Conflict, NotFound
from board.infra.models import job_media, jobs, media, outputs, submitters
from board.state import BoardState
from timeline.spec import Compilation
from wire import FINAL_STATES

log = logging.getLogger("board.domain.deletions")
RETENTION_BATCH = 500  # outputs per unit of work of the retention sweep


def _owned(who: Principal, query, owner_column):
    return query if who.is_admin else query.where(owner_column == who.submitter_id)


async def delete_media(board: BoardState, who: Principal, media_id: str) -> None:
    """Delete ``who``'s media (any, for an admin) and its file. NotFound when it is not theirs;
    Conflict while an unfinished job uses it or it is a forced watermark."""

    def unit(conn: Connection) -> str:
        row = conn.execute(
            _owned(who, select(media.c.storage_key), media.c.submitter_id).where(
                media.c.id == media_id
            )
        ).first()
        if row is None:
            raise NotFound(f"no media {media_id}")
        using = (
            conn.execute(
                select(jobs.c.id)
                .select_from(job_media.join(jobs, jobs.c.id == job_media.c.job_id))
                .where(job_media.c.media_id == media_id, jobs.c.state.not_in(FINAL_STATES))
                .order_by(jobs.c.id)
                .limit(4)
            )
            .scalars()
            .all()
        )
        if using:
            more = ", …" if len(using) > 3 else ""
            raise Conflict(
                f"media {media_id} is used by unfinished job {', '.join(using[:3])}{more}; "
                "delete it once they are done (or cancel them)"
            )
        forced = conn.execute(
            select(submitters.c.name).where(submitters.c.forced_watermark == media_id).limit(1)
        ).first()
        if forced is not None:
            raise Conflict(
                f"media {media_id} is the watermark forced on {forced.name}'s jobs; an admin "
                "changes that limit first"
            )
        conn.execute(delete(job_media).where(job_media.c.media_id == media_id))
        conn.execute(delete(media).where(media.c.id == media_id))
        return row.storage_key

    key = await board.db.transact(unit)
    await asyncio.to_thread(board.storage.delete, key)


async def delete_job(board: BoardState, who: Principal, job_id: str) -> None:
    """Delete a final job of ``who``'s (any, for an admin) with its history and output files.
    NotFound when it is not theirs; Conflict while it is queued or running."""

    def unit(conn: Connection) -> list[str]:
        row = conn.execute(
            _owned(who, select(jobs.c.state), jobs.c.submitter_id).where(jobs.c.id == job_id)
        ).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        files = _output_files(conn, job_id)
        # The state is checked by the delete itself: a retry racing this one wins or loses whole.
        gone = conn.execute(
            delete(jobs).where(jobs.c.id == job_id, jobs.c.state.in_(FINAL_STATES))
        ).rowcount
        if gone != 1:
            raise Conflict(
                f"job {job_id} is {row.state}; cancel it first (POST …/cancel), then delete it"
            )
        return files

    files = await board.db.transact(unit)
    await asyncio.to_thread(_delete_files, board, files)


async def delete_output(board: BoardState, who: Principal, job_id: str) -> None:
    """Delete the output (video and thumbnail) of ``who``'s job; the job stays succeeded.
    NotFound when the job is not theirs or has no output."""
    now = time.time()

    def unit(conn: Connection) -> list[str]:
        row = conn.execute(
            _owned(who, select(jobs.c.state), jobs.c.submitter_id).where(jobs.c.id == job_id)
        ).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        files = _output_files(conn, job_id)
        if not files:
            raise NotFound(f"job {job_id} has no output")
        conn.execute(delete(outputs).where(outputs.c.job_id == job_id))
        record_event(
            conn, job_id, row.state, row.state, message=f"output deleted by {who.name}", at=now
        )
        return files

    files = await board.db.transact(unit)
    await asyncio.to_thread(_delete_files, board, files)


async def remove_expired_outputs(board: BoardState, now: float | None = None) -> int:
    """Delete outputs older than ``BOARD_OUTPUT_RETENTION_DAYS`` (nothing when it is not set).
    Returns how many went."""
    days = board.config.output_retention_days
    if days is None:
        return 0
    now = time.time() if now is None else now
    cutoff = now - days * 86400

    def unit(conn: Connection) -> tuple[int, list[str]]:
        expired = (
            conn.execute(
                select(outputs.c.job_id)
                .where(outputs.c.created_at < cutoff)
                .order_by(outputs.c.created_at)
                .limit(RETENTION_BATCH)
            )
            .scalars()
            .all()
        )
        files: list[str] = []
        for job_id in expired:
            files += _output_files(conn, job_id)
            record_event(conn, job_id, "succeeded", "succeeded", at=now,
                         message=f"output removed: older than {days:g} days (retention)")  # fmt: skip
        if expired:
            conn.execute(delete(outputs).where(outputs.c.job_id.in_(expired)))
        return len(expired), files

    removed = 0
    while True:
        count, files = await board.db.transact(unit)
        await asyncio.to_thread(_delete_files, board, files)
        removed += count
        if count < RETENTION_BATCH:
            break
    if removed:
        log.info("removed %d outputs older than %g days", removed, days)
    return removed


async def check_sources_present(board: BoardState, job_id: str) -> None:
    """Conflict when media the job's compilation names was deleted since it was submitted:
    what a retry must know before it queues the job again."""

    def read(conn: Connection) -> list[str]:
        row = conn.execute(select(jobs.c.compilation).where(jobs.c.id == job_id)).first()
        if row is None:
            return []
        named = {s.media for s in msgspec.convert(row.compilation, Compilation).sources()}
        named.discard(None)
        found = conn.execute(select(media.c.id).where(media.c.id.in_(named))).scalars().all()
        return sorted(named - set(found))

    missing = await board.db.query(read)
    if missing:
        raise Conflict(
            f"job {job_id} uses media that was deleted ({', '.join(missing)}); submit a new job "
            "with media that exists"
        )


def _output_files(conn: Connection, job_id: str) -> list[str]:
    """Storage keys of the job's committed output: the video, its checksum note, the thumbnail."""
    row = conn.execute(
        select(outputs.c.storage_key, outputs.c.thumbnail_key).where(outputs.c.job_id == job_id)
    ).first()
    if row is None:
        return []
    return [k for k in (row.storage_key, row.storage_key + ".json", row.thumbnail_key) if k]


def _delete_files(board: BoardState, keys: list[str]) -> None:
    for key in keys:
        board.storage.delete(key)
