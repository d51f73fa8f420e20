"""Media uploads: streamed to storage, hashed on the way, deduplicated per submitter by sha256,
probed with ffprobe. Non-media (a playlist, a list of other files, a file over the caps of
``timeline.probe``) is refused with a message and leaves nothing behind.

Bytes a submitter uploaded before are recognised by their sha256 before any probe: a repeat
costs no ffprobe. Probes run through ``board.prober`` (``board.infra.probing``): child
processes, a few at a time, each limited in memory and time."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import AsyncIterable

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from board.domain.lifecycle import lease_issued_to
from board.domain.limits import SubmitterLimits, load_limits, storage_used
from board.domain.tokens import Principal
from board.domain.views import media_view
from board.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from board.infra.ids import new_id
from board.infra.models import job_media, jobs, media, submitters
from board.state import BoardState
from timeline.probe import MediaInfo, ProbeError
from wire import ACTIVE_STATES, LEASE_HEADER, MediaView

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def clean_filename(name: str | None) -> str:
    """A display name safe to store and show: no directories, no control characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip(" .")[:200]
    return base or "upload"


def probe_json(info: MediaInfo) -> dict:
    """What the board keeps of a probe: every fact of ``MediaInfo`` but its path, so the board
    can plan a render of this media as a farmhand would (``board.domain.splits``)."""
    facts = dataclasses.asdict(info)
    facts.pop("path")
    return facts


async def upload_media(
    board: BoardState,
    who: Principal,
    chunks: AsyncIterable[bytes],
    *,
    filename: str | None,
    declared_size: int | None,
) -> tuple[MediaView, bool]:
    """Store an upload; returns the media and whether it was new (False: the same bytes were
    uploaded before by this submitter, that media is returned)."""
    if who.submitter_id is None:
        raise Forbidden("only submitters own media; create a submitter token to upload")
    max_bytes = board.config.max_upload_bytes

    def read(conn: Connection) -> tuple[SubmitterLimits, int | None]:
        sub = load_limits(conn, who.submitter_id)
        if sub.limits.storage_quota_bytes is None:
            return sub, None
        return sub, sub.limits.storage_quota_bytes - storage_used(conn, who.submitter_id)

    sub, left = await board.db.query(read)
    if left is not None:
        max_bytes = min(max_bytes, max(0, left))
    if declared_size is not None and declared_size > max_bytes:
        raise PayloadTooLarge(
            f"upload of {declared_size} bytes is over what {sub.name} may store ({max_bytes} bytes left)"
        )
    media_id = new_id("m")
    key = f"media/{media_id[-2:]}/{media_id}"
    written = await board.storage.put_stream(key, chunks, max_bytes=max_bytes)
    name = clean_filename(filename)
    try:
        if written.size == 0:
            raise BadRequest(f"{name}: the upload is empty")
        same = await board.db.query(
            lambda conn: _same_bytes(conn, who.submitter_id, written.sha256)
        )
        if same is not None:  # uploaded before: that media, and no probe of the same bytes again
            board.storage.delete(key)
            return media_view(same), False
        try:
            info = await board.prober.probe(board.storage.local_path(key), label=name)
        except ProbeError as exc:
            raise BadRequest(f"{exc.message} — upload a video, audio or image file") from None
        row = {
            "id": media_id,
            "submitter_id": who.submitter_id,
            "sha256": written.sha256,
            "size": written.size,
            "filename": name,
            "storage_key": key,
            "probe": probe_json(info),
            "duration_s": info.duration_s,
            "created_at": time.time(),
        }

        def unit(conn: Connection):
            same = _same_bytes(conn, who.submitter_id, written.sha256)  # one raced us here
            if same is None:
                conn.execute(insert(media).values(**row))
            return same

        same = await board.db.transact(unit)
        if same is not None:
            board.storage.delete(key)
            return media_view(same), False
    except BaseException:
        board.storage.delete(key)
        raise
    return media_view(row), True


def _same_bytes(conn: Connection, submitter_id: int, sha256: str):
    """This submitter's media with these bytes, if any."""
    return conn.execute(
        select(media).where(media.c.submitter_id == submitter_id, media.c.sha256 == sha256).limit(1)
    ).first()


async def get_media(board: BoardState, who: Principal, media_id: str) -> dict:
    """The media row, if ``who`` may see it: its owner or an admin (others get 404)."""
    row = await board.db.query(
        lambda conn: conn.execute(select(media).where(media.c.id == media_id)).first()
    )
    if row is None or not (who.is_admin or row.submitter_id == who.submitter_id):
        raise NotFound(f"no media {media_id}")
    return row


async def media_for_farmhand(
    board: BoardState, who: Principal, media_id: str, lease_token: str | None
):
    """A farmhand may download media only for the job its lease holds: the job's own media, or
    the watermark its submitter's limits force on it (possibly set after the job was submitted)."""
    if not lease_token:
        raise Forbidden(
            f"a farmhand downloads media with the {LEASE_HEADER} header of the job it holds"
        )
    if not lease_issued_to(lease_token, who.token_id):
        raise NotFound(f"no media {media_id} for the job this lease holds")

    def read(conn: Connection):
        held = conn.execute(
            select(jobs.c.id, submitters.c.forced_watermark)
            .select_from(jobs.join(submitters, submitters.c.id == jobs.c.submitter_id))
            .where(jobs.c.lease_token == lease_token, jobs.c.state.in_(ACTIVE_STATES))
        ).first()
        if held is None:
            return None
        of_job = select(job_media.c.media_id).where(
            job_media.c.job_id == held.id, job_media.c.media_id == media_id
        )
        if media_id != held.forced_watermark and conn.execute(of_job).first() is None:
            return None
        return conn.execute(select(media).where(media.c.id == media_id)).first()

    row = await board.db.query(read)
    if row is None:
        raise NotFound(f"no media {media_id} for the job this lease holds")
    return row
