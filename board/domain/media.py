"""Media uploads: streamed to storage, hashed on the way, deduplicated per submitter by sha256,
probed with ffprobe. Non-media (a playlist, a list of other files, a file over the caps of
``timeline.probe``) is refused with a message and leaves nothing behind.

Bytes a submitter uploaded before are recognised by their sha256 before any probe: a repeat
costs no ffprobe. Probes run through ``board.prober`` (``board.infra.probing``): child
processes, a few at a time, each limited in memory and time."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterable
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from board.domain.direct_outputs import declared_parts, upload_plan
from board.domain.lifecycle import lease_issued_to
from board.domain.limits import SubmitterLimits, load_limits, storage_used
from board.domain.tokens import Principal
from board.domain.views import media_view
from board.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from board.infra.ids import new_id
from board.infra.models import job_media, jobs, media, submitters
from board.infra.s3 import PartsMissing, S3Storage, UploadNotVerified, plan_parts
from board.infra.storage import Written, spool
from board.state import BoardState
from timeline.probe import MediaInfo, ProbeError
from wire import ACTIVE_STATES, LEASE_HEADER, MediaUpload, MediaUploadStart, MediaView, declare_file
from wire.routes import MEDIA_UPLOAD_FINISH, path

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


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


async def _room_left(board: BoardState, who: Principal, declared_size: int | None) -> int:
    """How many bytes ``who`` may upload now (the board's limit and their storage quota);
    PayloadTooLarge when ``declared_size`` is over it."""
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
    return max_bytes


def media_key(media_id: str) -> str:
    return f"media/{media_id[-2:]}/{media_id}"


async def upload_media(
    board: BoardState,
    who: Principal,
    chunks: AsyncIterable[bytes],
    *,
    filename: str | None,
    declared_size: int | None,
) -> tuple[MediaView, bool]:
    """Store an upload; returns the media and whether it was new (False: the same bytes were
    uploaded before by this submitter, that media is returned). The bytes are held in a local
    file while they are probed, then stored (an object store: uploaded to it)."""
    max_bytes = await _room_left(board, who, declared_size)
    media_id = new_id("m")
    key = media_key(media_id)
    path, written = await spool(chunks, board.storage.temp_path().parent, max_bytes=max_bytes)
    try:
        return await _keep(board, who, path, written, clean_filename(filename), media_id, key)
    finally:
        path.unlink(missing_ok=True)


async def _keep(
    board: BoardState,
    who: Principal,
    path: Path,
    written: Written,
    name: str,
    media_id: str,
    key: str,
    *,
    stored: bool = False,
) -> tuple[MediaView, bool]:
    """Probe the local copy ``path`` of an upload and record it as media ``media_id`` at
    ``key``, storing the file there unless it is ``stored`` already; or, when this submitter
    has these bytes already, that media (the new copy goes). Anything that fails leaves no
    file behind."""
    try:
        if written.size == 0:
            raise BadRequest(f"{name}: the upload is empty")
        same = await board.db.query(
            lambda conn: _same_bytes(conn, who.submitter_id, written.sha256)
        )
        if same is not None:  # uploaded before: that media, and no probe of the same bytes again
            if stored:
                await asyncio.to_thread(board.storage.delete, key)
            return media_view(same), False
        try:
            info = await board.prober.probe(path, label=name)
        except ProbeError as exc:
            raise BadRequest(f"{exc.message} — upload a video, audio or image file") from None
        if not stored:
            await asyncio.to_thread(board.storage.put_file, path, key)
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
            await asyncio.to_thread(board.storage.delete, key)
            return media_view(same), False
    except BaseException:
        await asyncio.shield(asyncio.to_thread(board.storage.delete, key))
        raise
    return media_view(row), True


# ---------------------------------------------------------------- uploads straight to the store


async def start_media_upload(
    board: BoardState, who: Principal, start: MediaUploadStart
) -> MediaUpload:
    """Begin an upload of the file ``start`` describes (or resume the one begun for the same
    bytes): the media itself when this submitter has these bytes already; on a board that keeps
    files on its disk, "send the body to POST /api/v1/media"; with an object store, presigned
    URLs for the parts and where to say it is done."""
    await _room_left(board, who, start.size)
    same = await board.db.query(lambda conn: _same_bytes(conn, who.submitter_id, start.sha256))
    if same is not None:
        return MediaUpload(protocol="s3-multipart" if board.storage.direct else "board",
                           media=media_view(same))  # fmt: skip
    store = board.storage
    if not isinstance(store, S3Storage):
        return MediaUpload(protocol="board")
    declared = declared_parts(start, board.config.max_upload_bytes)
    facts = {"sha256": start.sha256, "size": start.size, "part_size": start.part_size,
             "parts": [sha for _, sha in declared]}  # fmt: skip
    note_key = _upload_note(who, start.sha256)

    def begin() -> MediaUpload:
        note = _read_note(store, note_key)
        if note is not None and {k: note.get(k) for k in facts} == facts:
            key = media_key(note["media_id"])
            if store.list_parts(key, note["upload_id"]) is not None:
                return _answer(store, start, note, declared)
        if note is not None:
            store.abort_multipart(media_key(note["media_id"]), note["upload_id"])
        media_id = new_id("m")
        upload_id = store.create_multipart(media_key(media_id))
        note = {**facts, "media_id": media_id, "upload_id": upload_id,
                "filename": clean_filename(start.filename), "created_at": time.time()}  # fmt: skip
        store.write_note(note_key, json.dumps(note))
        return _answer(store, start, note, declared)

    return await asyncio.to_thread(begin)


def _upload_note(who: Principal, sha256: str) -> str:
    """The note of a submitter's upload of these bytes: one per submitter and file, so asking
    again resumes it."""
    return f"incoming/{who.submitter_id}/{sha256}.json"


def _read_note(store: S3Storage, key: str) -> dict | None:
    text = store.read_note(key)
    try:
        note = json.loads(text) if text else None
    except ValueError:
        return None
    return note if isinstance(note, dict) else None


def _answer(
    store: S3Storage, start: MediaUploadStart, note: dict, declared: list[tuple[int, str]]
) -> MediaUpload:
    plan = upload_plan(store, media_key(note["media_id"]), note["upload_id"], start.part_size,
                       declared)  # fmt: skip
    finish = path(MEDIA_UPLOAD_FINISH, upload_id=start.sha256)
    return MediaUpload(protocol="s3-multipart", upload=plan, finish_url=finish)


async def finish_media_upload(
    board: BoardState, who: Principal, upload_id: str
) -> tuple[MediaView, bool]:
    """The parts of upload ``upload_id`` (the file's sha256) arrived: join them, check the whole
    file's size and sha256, probe it and record the media. The board reads the file once for
    that (its probe needs the bytes; see docs/architecture.md, "How a job flows")."""
    if who.submitter_id is None:
        raise Forbidden("only submitters own media; create a submitter token to upload")
    store = board.storage
    if not isinstance(store, S3Storage):
        raise Conflict("this board takes uploads itself: POST the file to /api/v1/media")
    note_key = _upload_note(who, upload_id.lower()) if _HEX64.match(upload_id) else None
    note = await asyncio.to_thread(_read_note, store, note_key) if note_key else None
    if note is None:  # finished already (a finish asked again), or never begun
        sha = upload_id.lower()
        same = await board.db.query(lambda conn: _same_bytes(conn, who.submitter_id, sha))
        if same is not None:
            return media_view(same), False
        raise NotFound(f"no upload {upload_id} of yours: begin it with POST /api/v1/media/uploads")
    media_id, key = note["media_id"], media_key(note["media_id"])
    declared = list(zip(plan_parts(note["size"], note["part_size"]), note["parts"], strict=True))
    local = store.temp_path()

    def fetch() -> Written:
        if not store.exists(key):
            try:
                store.complete_verified(key, note["upload_id"], declared)
            except PartsMissing as exc:
                raise Conflict(f"upload {upload_id} is unfinished: {exc.message}") from None
            except UploadNotVerified as exc:
                store.abort_multipart(key, note["upload_id"])
                store.delete(note_key)
                raise BadRequest(f"upload {upload_id}: {exc.message}; begin it again") from None
        store.download_file(key, local)
        got = declare_file(local, note["part_size"])  # the whole file's sha256 and each part's
        return Written(size=got.size, sha256=got.sha256)

    try:
        written = await asyncio.to_thread(fetch)
        if (written.size, written.sha256) != (note["size"], note["sha256"]):
            await asyncio.to_thread(store.delete, key)
            await asyncio.to_thread(store.delete, note_key)
            raise BadRequest(
                f"upload {upload_id}: the store holds {written.size} bytes with sha256 "
                f"{written.sha256[:12]}…, not the file declared; begin it again"
            )
        answer = await _keep(board, who, local, written, note["filename"], media_id, key,
                             stored=True)  # fmt: skip
    except BadRequest:
        await asyncio.to_thread(store.delete, note_key)  # a refused file: begin again afresh
        raise
    finally:
        local.unlink(missing_ok=True)
    await asyncio.to_thread(store.delete, note_key)
    return answer


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
