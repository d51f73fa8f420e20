"""Submitting and reading jobs: validation against the submitter's media and limits, idempotent
submit, batch submit, listing, and the compilation context a farmhand renders from."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from board.domain import links, splits
from board.domain.lifecycle import (
    Held,
    Moved,
    announce,
    event_row,
    held_job,
    own_lease,
    record_events,
)
from board.domain.limits import (
    SubmitterLimits,
    apply_limits,
    check_clip_count,
    check_render_seconds,
    check_storage_quota,
    load_limits,
)
from board.domain.tokens import Principal
from board.domain.views import JOB_SELECT, job_view, to_dt
from board.errors import BadRequest, BoardError, Conflict, NotFound
from board.infra.ids import new_id
from board.infra.models import (
    attempts,
    farmhands,
    job_events,
    job_media,
    job_tags,
    jobs,
    media,
    outputs,
)
from board.state import BoardState
from timeline.plan import estimate_duration
from timeline.spec import Compilation, Source
from wire import (
    AttemptView,
    BatchItem,
    BatchResult,
    JobContext,
    JobEvent,
    JobPage,
    JobView,
    MediaRef,
    Piece,
    Requirements,
    SubmitJob,
)

PAGE_MAX = 500
# Jobs per unit of work in a batch submit: a unit holds the writer, and every claim and heartbeat
# waits behind it (the figures are in BENCHMARKS.md, "Fleet").
BATCH_CHUNK = 100


def _roles(compilation: Compilation) -> list[tuple[str, Source, str]]:
    """Every source with a human label and what it must contain."""
    out: list[tuple[str, Source, str]] = []
    if compilation.intro:
        out.append(("intro", compilation.intro, "video"))
    for i, clip in enumerate(compilation.clips, 1):
        out.append((f"clip {i}", clip, "video"))
    if compilation.outro:
        out.append(("outro", compilation.outro, "video"))
    for i, stinger in enumerate(compilation.transitions.stingers, 1):
        out.append((f"stinger {i}", stinger, "video"))
    if compilation.watermark:
        out.append(("watermark", compilation.watermark, "picture"))
    if compilation.music:
        out.append(("music", compilation.music, "audio"))
    return out


def _check_sources(conn: Connection, compilation: Compilation, submitter_id: int) -> dict[str, Any]:
    """Every ``media`` source must be this submitter's and suit its role; returns the rows."""
    ids = {s.media for _, s, _ in _roles(compilation) if s.media}
    rows = {}
    if ids:
        found = conn.execute(
            select(media.c.id, media.c.probe, media.c.duration_s).where(
                media.c.id.in_(ids), media.c.submitter_id == submitter_id
            )
        )
        rows = {r.id: r for r in found}
    for label, source, needs in _roles(compilation):
        if source.path is not None:
            raise BadRequest(
                f"{label}: `path` sources are for local renders; upload the file "
                "(POST /api/v1/media) and use its media id"
            )
        if source.media is None:
            continue
        row = rows.get(source.media)
        if row is None:
            raise BadRequest(f"{label}: unknown media id {source.media!r}")
        info = row.probe or {}
        if needs == "video" and (not info.get("has_video") or info.get("image")):
            raise BadRequest(f"{label}: media {source.media} has no video stream")
        if needs == "picture" and not info.get("has_video"):
            raise BadRequest(f"{label}: media {source.media} is not an image or video")
        if needs == "audio" and not info.get("has_audio"):
            raise BadRequest(f"{label}: media {source.media} has no audio stream")
        start = getattr(source, "start", None)
        if start is not None and row.duration_s is not None and start >= row.duration_s:
            raise BadRequest(
                f"{label}: start {start:g} s is past the end of media "
                f"{source.media} ({row.duration_s:.2f} s long)"
            )
    return rows


def body_hash(job: SubmitJob) -> str:
    """What an idempotency key is checked against. A field left at a default added later
    (``split``) is left out, so a body hashes as it did before that field existed."""
    body = msgspec.to_builtins(job)
    if body.get("split") == "auto":
        del body["split"]
    return hashlib.sha256(msgspec.json.encode(body)).hexdigest()


def requirements_of(job: SubmitJob) -> Requirements:
    req = job.requirements or Requirements()
    if req.codec is None:
        req = msgspec.structs.replace(req, codec=job.compilation.output.codec)
    return req


def _existing(conn: Connection, submitter_id: int, key: str):
    return conn.execute(
        select(jobs.c.id, jobs.c.body_hash).where(
            jobs.c.submitter_id == submitter_id, jobs.c.idempotency_key == key
        )
    ).first()


def _repeated(found: Any, job: SubmitJob) -> str:
    """The id of the job an idempotent repeat stands for; Conflict when the body differs."""
    if found.body_hash != body_hash(job):
        raise Conflict(
            f"idempotency key {job.idempotency_key!r} was used for a different "
            f"job ({found.id}); use a new key for a new job"
        )
    return found.id


# One statement for every insert, the values as parameters (an executemany per table).
_INSERT_JOB = insert(jobs)
_INSERT_TAGS = insert(job_tags)
_INSERT_MEDIA = insert(job_media)


@dataclass
class _NewJob:
    """A validated job, ready to be written: its rows in every table."""

    job: dict[str, Any]
    tags: list[dict[str, str]]
    media: list[dict[str, str]]


def _validated(
    board: BoardState,
    conn: Connection,
    who: Principal,
    job: SubmitJob,
    now: float,
    sub: SubmitterLimits,
    also_s: float = 0.0,
) -> _NewJob:
    """Check a new job against the submitter's media and limits (BoardError if it fails) and
    build its rows. ``also_s``: estimates accepted in this transaction but not written yet."""
    check_clip_count(job.compilation, sub.limits)
    rows = _check_sources(conn, job.compilation, who.submitter_id)
    capped, _ = apply_limits(job.compilation, sub.limits)
    durations = {f"media:{mid}": r.duration_s for mid, r in rows.items()}
    estimate = estimate_duration(capped, durations, unknown_s=board.config.url_clip_estimate_s)
    check_render_seconds(conn, sub, estimate, now, also_s)
    check_storage_quota(conn, sub)
    req = requirements_of(job)
    job_id = new_id("j")
    media_ids = sorted({s.media for _, s, _ in _roles(job.compilation) if s.media})
    if sub.limits.forced_watermark and sub.limits.forced_watermark not in media_ids:
        media_ids.append(sub.limits.forced_watermark)
    return _NewJob(
        job=dict(
            id=job_id,
            submitter_id=who.submitter_id,
            title=job.compilation.title,
            state="queued",
            priority=job.priority,
            compilation=msgspec.to_builtins(job.compilation),
            requirements=msgspec.to_builtins(req),
            req_codec=req.codec,
            req_encoder=req.encoder,
            req_gpu_memory_mb=req.min_gpu_memory_mb,
            split=job.split,
            attempts=0,
            max_attempts=job.max_attempts,
            not_before=0.0,
            queued_at=now,
            failed_by=[],
            progress=0.0,
            idempotency_key=job.idempotency_key,
            body_hash=body_hash(job),
            estimate_s=estimate,
            created_at=now,
            updated_at=now,
        ),
        tags=[{"job_id": job_id, "tag": tag} for tag in sorted(set(req.tags or ()))],
        media=[{"job_id": job_id, "media_id": m} for m in media_ids],
    )


def _write_jobs(conn: Connection, who: Principal, new: list[_NewJob], now: float) -> None:
    """Insert validated jobs: one statement per table for all of them."""
    if not new:
        return
    conn.execute(_INSERT_JOB, [n.job for n in new])
    if tags := [row for n in new for row in n.tags]:
        conn.execute(_INSERT_TAGS, tags)
    if media_rows := [row for n in new for row in n.media]:
        conn.execute(_INSERT_MEDIA, media_rows)
    submitted = f"submitted by {who.name}"
    record_events(
        conn, [event_row(n.job["id"], None, "queued", message=submitted, at=now) for n in new]
    )


def _insert_job(
    board: BoardState, conn: Connection, who: Principal, job: SubmitJob, now: float
) -> tuple[str, bool]:
    """Validate and insert one job inside ``conn``'s transaction. Returns (id, created)."""
    if job.idempotency_key:
        found = _existing(conn, who.submitter_id, job.idempotency_key)
        if found is not None:
            return _repeated(found, job), False
    new = _validated(board, conn, who, job, now, load_limits(conn, who.submitter_id))
    _write_jobs(conn, who, [new], now)
    return new.job["id"], True


class _Seen(NamedTuple):
    id: str
    body_hash: str


def _unit_at_once(
    board: BoardState,
    conn: Connection,
    who: Principal,
    chunk: list[tuple[int, SubmitJob]],
    now: float,
    sub: SubmitterLimits,
) -> tuple[list[tuple[int, str, bool]], list[BatchItem]]:
    """A batch unit validated item by item, then written with one statement per table.
    Returns ((index, id, created) per accepted item, refusals). Raises what the write raised
    (a racing idempotency key, an unstorable value): the caller then goes item by item."""
    answers: list[tuple[int, str, bool]] = []
    refused: list[BatchItem] = []
    new: list[_NewJob] = []
    keys: dict[str, _Seen] = {}  # idempotency keys accepted in this unit, not yet written
    pending_s = 0.0
    for index, job in chunk:
        try:
            key = job.idempotency_key
            found = (keys.get(key) or _existing(conn, who.submitter_id, key)) if key else None
            if found is not None:
                answers.append((index, _repeated(found, job), False))
                continue
            made = _validated(board, conn, who, job, now, sub, pending_s)
        except BoardError as exc:
            refused.append(BatchItem(index=index, status=exc.status, error=exc.message))
            continue
        pending_s += made.job["estimate_s"]
        new.append(made)
        if key:
            keys[key] = _Seen(made.job["id"], made.job["body_hash"])
        answers.append((index, made.job["id"], True))
    _write_jobs(conn, who, new, now)
    return answers, refused


def _need_submitter(who: Principal) -> None:
    if who.submitter_id is None:
        raise BadRequest("only submitter tokens submit jobs: `board token create --role submitter`")


async def submit(board: BoardState, who: Principal, job: SubmitJob) -> tuple[JobView, bool]:
    """Submit one job. Returns (job, created); an idempotent repeat returns the existing job."""
    _need_submitter(who)
    now = time.time()
    try:
        job_id, created = await board.db.transact(
            lambda conn: _insert_job(board, conn, who, job, now)
        )
    except IntegrityError:
        # Two submits with the same key raced; the other one won. Answer as a repeat would.
        found = await board.db.query(
            lambda conn: _existing(conn, who.submitter_id, job.idempotency_key or "")
        )
        if found is None:
            raise
        job_id, created = _repeated(found, job), False
    if created:
        announce(board, [Moved(job_id, "queued")])
    return await get_job(board, who, job_id), created


async def submit_batch(board: BoardState, who: Principal, batch: list[SubmitJob]) -> BatchResult:
    """Submit many jobs in one request; each item succeeds or fails on its own. A unit of
    BATCH_CHUNK items is validated item by item and written with one statement per table, in a
    savepoint; if that write fails (a racing idempotency key, a value the database refuses) it
    is undone and the unit goes again one item per savepoint, so a bad item never leaves a
    half-written one."""
    _need_submitter(who)
    now = time.time()
    items: list[BatchItem] = []
    created_ids: list[tuple[int, str, bool]] = []

    def unit(conn: Connection, chunk: list[tuple[int, SubmitJob]]) -> None:
        sub = load_limits(conn, who.submitter_id)  # once per unit: the same for every item

        def attempt(part: list[tuple[int, SubmitJob]]) -> Exception | None:
            """Validate and write ``part`` in a savepoint; what its write raised, if it failed
            (then nothing of it is written)."""
            try:
                with conn.begin_nested():
                    answers, refused = _unit_at_once(board, conn, who, part, now, sub)
            except (IntegrityError, BoardError) as exc:
                return exc
            created_ids.extend(answers)
            items.extend(refused)
            return None

        if attempt(chunk) is None:
            return
        for index, job in chunk:  # the unit's write was undone: item by item, to find which
            error = attempt([(index, job)])
            if isinstance(error, BoardError):
                items.append(BatchItem(index=index, status=error.status, error=error.message))
            elif error is not None:
                # A concurrent request (another batch, another board process) committed the same
                # idempotency key first; the savepoint undid ours. Answer as a repeat would.
                found = _existing(conn, who.submitter_id, job.idempotency_key or "")
                if found is None:
                    raise error
                try:
                    created_ids.append((index, _repeated(found, job), False))
                except Conflict as exc:
                    items.append(BatchItem(index=index, status=exc.status, error=exc.message))

    # In chunks: a 500-job batch in one unit would hold the writer (and every claim and
    # heartbeat queued behind it) for the whole batch; too small a chunk makes the batch wait a
    # turn of the loop per chunk.
    numbered = list(enumerate(batch))
    for start in range(0, len(numbered), BATCH_CHUNK):
        chunk = numbered[start : start + BATCH_CHUNK]
        await board.db.transact(lambda conn, chunk=chunk: unit(conn, chunk))
    views = await _views(board, [job_id for _, job_id, _ in created_ids])
    for index, job_id, created in created_ids:
        items.append(BatchItem(index=index, status=201 if created else 200, job=views[job_id]))
    items.sort(key=lambda item: item.index)
    new = sum(1 for _, _, c in created_ids if c)
    announce(board, [Moved(job_id, "queued") for _, job_id, created in created_ids if created])
    return BatchResult(
        items=items,
        created=new,
        existing=len(created_ids) - new,
        rejected=len(batch) - len(created_ids),
    )


async def _views(board: BoardState, ids: list[str]) -> dict[str, JobView]:
    """The jobs a batch wrote, by primary key in one SELECT."""
    if not ids:
        return {}
    query = JOB_SELECT.where(jobs.c.id.in_(ids))
    rows = await board.db.query(lambda conn: conn.execute(query).all())
    return {row.id: job_view(row) for row in rows}


def _visible(who: Principal, query):
    return query if who.is_admin else query.where(jobs.c.submitter_id == who.submitter_id)


# Read on every look at a job (its page, its event stream, every answer about it): built once.
_JOB_BY_ID = JOB_SELECT.where(jobs.c.id == bindparam("b_id"))
_JOB_ID = select(jobs.c.id).where(jobs.c.id == bindparam("b_id"))
_SUBMITTERS = jobs.c.submitter_id == bindparam("b_submitter")
_VISIBLE = {
    True: (_JOB_BY_ID, _JOB_ID),  # an admin sees every job
    False: (_JOB_BY_ID.where(_SUBMITTERS), _JOB_ID.where(_SUBMITTERS)),
}


def _read_visible(who: Principal, job_id: str, which: int):
    query = _VISIBLE[who.is_admin][which]
    params = {"b_id": job_id, "b_submitter": who.submitter_id}
    return lambda conn: conn.execute(query, params).first()


_PIECES = (
    select(
        jobs.c.id, jobs.c.kind, jobs.c.piece, jobs.c.state, jobs.c.attempts, jobs.c.stage,
        jobs.c.progress, jobs.c.error, farmhands.c.name.label("farmhand"),
    )
    .select_from(jobs.outerjoin(farmhands, farmhands.c.id == jobs.c.farmhand_id))
    .where(jobs.c.parent_id == bindparam("b_id"))
)  # fmt: skip


async def get_job(board: BoardState, who: Principal, job_id: str) -> JobView:
    """The job, if ``who`` may see it (its submitter or an admin; others get 404), with its
    pieces when it was split."""
    read = _read_visible(who, job_id, 0)

    def with_pieces(conn: Connection):
        row = read(conn)
        if row is None or row.kind != "render":
            return row, []
        return row, conn.execute(_PIECES, {"b_id": job_id}).all()

    row, pieces = await board.db.query(with_pieces)
    if row is None:
        raise NotFound(f"no job {job_id}")
    return job_view(row, pieces)


async def check_owner(board: BoardState, who: Principal, job_id: str) -> None:
    if await board.db.query(_read_visible(who, job_id, 1)) is None:
        raise NotFound(f"no job {job_id}")


SORTS = {
    "created": jobs.c.created_at,
    "updated": jobs.c.updated_at,
    "priority": jobs.c.priority,
    "state": jobs.c.state,
    "title": jobs.c.title,
    "progress": jobs.c.progress,
}


async def list_jobs(
    board: BoardState,
    who: Principal,
    *,
    state: list[str] | None,
    limit: int,
    offset: int,
    sort: str = "-created",
) -> JobPage:
    limit = max(1, min(limit, PAGE_MAX))
    offset = max(0, offset)
    column = SORTS.get(sort.lstrip("-"))
    if column is None:
        raise BadRequest(
            f"unknown sort {sort!r}; use one of {', '.join(SORTS)} (prefix - for descending)"
        )
    order = column.desc() if sort.startswith("-") else column.asc()
    whole = jobs.c.parent_id.is_(None)  # a split job's pieces are shown with it, not listed
    query = _visible(who, JOB_SELECT.where(whole))
    count = _visible(who, select(func.count()).select_from(jobs).where(whole))
    if state:
        query = query.where(jobs.c.state.in_(state))
        count = count.where(jobs.c.state.in_(state))
    page = query.order_by(order, jobs.c.id.desc()).limit(limit).offset(offset)

    def read(conn: Connection) -> tuple[int, list]:
        return conn.execute(count).scalar(), conn.execute(page).all()

    total, rows = await board.db.query(read)
    return JobPage(items=[job_view(r) for r in rows], total=total, limit=limit, offset=offset)


async def job_history(
    board: BoardState, who: Principal, job_id: str
) -> tuple[list[JobEvent], list[AttemptView]]:
    await check_owner(board, who, job_id)

    def read(conn: Connection) -> tuple[list, list]:
        events = conn.execute(
            select(*(job_events.c[name] for name in JobEvent.__struct_fields__))
            .where(job_events.c.job_id == job_id)
            .order_by(job_events.c.id)
        ).all()
        tries = conn.execute(
            select(attempts, farmhands.c.name.label("farmhand_name"))
            .select_from(attempts.outerjoin(farmhands, farmhands.c.id == attempts.c.farmhand_id))
            .where(attempts.c.job_id == job_id)
            .order_by(attempts.c.id)
        ).all()
        return events, tries

    events, tries = await board.db.query(read)
    return (
        [JobEvent(**{**e._mapping, "at": to_dt(e.at)}) for e in events],
        [
            AttemptView(
                **{
                    k: a._mapping[k]
                    for k in ("number", "outcome", "encoder", "error", "stderr_tail")
                },
                farmhand=a.farmhand_name,
                started_at=to_dt(a.started_at),
                ended_at=to_dt(a.ended_at),
            )
            for a in tries
        ],
    )


async def job_context(
    board: BoardState, job_id: str, lease_token: str, who: Principal
) -> JobContext:
    """Everything a farmhand needs to render the job it holds, limits applied (a piece of a
    split job: the compilation as it was split, which its plan must match)."""
    own_lease(who, job_id, lease_token)

    def read(conn: Connection):
        held = held_job(conn, job_id, lease_token)
        row = conn.execute(
            select(
                jobs.c.title, jobs.c.compilation, jobs.c.requirements, jobs.c.piece,
                jobs.c.req_encoder_name,
            ).where(jobs.c.id == job_id)
        ).one()  # fmt: skip
        compilation = msgspec.convert(row.compilation, Compilation)
        notes: list[str] = []
        if held.kind == "render":
            sub = load_limits(conn, held.submitter_id)
            compilation, notes = apply_limits(compilation, sub.limits)
        pieces = _pieces_to_join(conn, held, board) if held.kind == "join" else []
        ids = {s.media for s in compilation.sources() if s.media} if held.kind != "join" else set()
        found = []
        if ids:
            found = conn.execute(
                select(
                    media.c.id,
                    media.c.size,
                    media.c.sha256,
                    media.c.filename,
                    media.c.probe,
                    media.c.storage_key,
                ).where(media.c.id.in_(ids))
            ).all()
        return held, row, compilation, notes, ids, found, pieces

    held, row, compilation, notes, ids, found, pieces = await board.db.query(read)
    # a piece plans the whole compilation but fetches only what it reads: the board's probes
    probes = {f"media:{m.id}": m.probe for m in found} if held.kind in splits.PIECES else {}
    refs = {
        m.id: MediaRef(
            id=m.id,
            url=links.media_url(board, m.id, m.storage_key),
            size=m.size,
            sha256=m.sha256,
            filename=m.filename,
        )
        for m in found
    }
    missing = ids - refs.keys()
    if missing:
        raise NotFound(f"media {', '.join(sorted(missing))} of job {job_id} no longer exists")
    piece = row.piece or {}
    return JobContext(
        job_id=job_id,
        title=row.title,
        compilation=compilation,
        requirements=msgspec.convert(row.requirements, Requirements),
        media=refs,
        output_url=links.output_upload_url(board, job_id),
        thumbnail_url=links.thumbnail_upload_url(board, job_id, lease_token),
        attempt=held.attempts,
        heartbeat_interval_s=board.config.heartbeat_s,
        limits_applied=notes,
        kind=held.kind,
        sources=piece.get("sources"),
        part=piece.get("part"),
        encoder=row.req_encoder_name or "",
        pieces=pieces,
        probes=probes,
    )


def _pieces_to_join(conn: Connection, join: Held, board: BoardState) -> list[Piece]:
    """What a join downloads: every video part of its split, in order, then the audio."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.kind, jobs.c.piece, outputs.c.size, outputs.c.sha256,
               outputs.c.storage_key)
        .select_from(jobs.join(outputs, outputs.c.job_id == jobs.c.id))
        .where(jobs.c.parent_id == join.parent_id, jobs.c.kind.in_(splits.PIECES),
               jobs.c.state == "succeeded")
    ).all()  # fmt: skip
    rows.sort(key=lambda r: (r.kind != "part", r.piece["index"]))
    return [
        Piece(
            job_id=r.id,
            kind=r.kind,
            url=links.piece_url(board, join.id, r.id, r.storage_key),
            size=r.size,
            sha256=r.sha256,
            part=r.piece.get("part"),
        )
        for r in rows
    ]
