"""Split render: one job rendered in pieces by several farmhands at once.

docs/architecture.md, "Split render". A job the submitter allows to split (``split: auto``,
every source board media) is split when a farmhand claims it while other farmhands that could
take a piece wait for work, and the work pays (``timeline.split.split_plan``). The job becomes
a *parent* (``running``, stage ``split``, no lease of its own) with children that are ordinary
jobs — each with its own lease, heartbeat, fencing, retries and upload:

- ``part`` k of n: a run of whole video segments (``timeline.split.Part``), encoded with the
  one encoder the split names (``req_encoder_name``: a stream-copy join needs every part encoded
  alike), claimable only by farmhands that verified it;
- ``audio``: the whole audio track, rendered once;
- ``join``: made claimable when every part and the audio succeeded; it downloads them, joins
  them by stream copy, verifies the result and uploads it as the parent's output.

A lost or retryably failed piece is rendered again alone. A piece that fails for good (its
farmhand planned the compilation differently, an input is broken) abandons the split: the other
pieces are cancelled and the parent goes back to the queue to be rendered whole, where a broken
input fails it with its own message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from board.domain import lifecycle  # (it imports this module: used at call time only)
from board.domain.limits import apply_limits, load_limits
from board.infra.ids import new_id
from board.infra.models import job_media, job_tags, jobs, media
from timeline.errors import RenderError
from timeline.plan import RenderPlan, render_plan
from timeline.probe import MediaInfo
from timeline.spec import Compilation, SpecError
from timeline.split import audio_sources, split_plan
from wire import ACTIVE_STATES

SPLIT_STAGE = "split"
PIECES = ("part", "audio")  # what a join waits for
_FIELDS = {f.name for f in dataclasses.fields(MediaInfo)} - {"path"}


def may_split(row: Any) -> bool:
    """Whether a claimed candidate is a whole job its submitter lets the board split."""
    return row.kind == "render" and row.split == "auto" and row.parent_id is None


def _plan(conn: Connection, row: Any) -> tuple[Compilation, RenderPlan] | None:
    """The compilation of the job ``row`` (the submitter's limits applied, as its pieces will
    render it) and its render plan from the board's probes; None when it cannot be planned here
    (a web clip, whose length only its fetch tells, or media probed before the board kept every
    fact)."""
    compilation, _ = apply_limits(
        msgspec.convert(row.compilation, Compilation), load_limits(conn, row.submitter_id).limits
    )
    sources = list({s.key: s for s in compilation.sources()}.values())
    if any(s.media is None for s in sources):
        return None
    found = conn.execute(
        select(media.c.id, media.c.probe).where(media.c.id.in_([s.media for s in sources]))
    ).all()
    probes = {r.id: r.probe or {} for r in found}
    infos = {}
    for source in sources:
        facts = probes.get(source.media, {})
        if not _FIELDS <= facts.keys():
            return None
        known = {name: facts[name] for name in _FIELDS}
        infos[source.key] = MediaInfo(path=Path(source.media), **known)
    try:
        return compilation, render_plan(compilation, infos)
    except (RenderError, SpecError, ValueError):
        return None  # the whole render will say what is wrong with it


def split_job(
    conn: Connection,
    job: Any,
    *,
    renderers: int,
    encoder: str,
    min_work_s: float,
    now: float,
) -> list[str]:
    """Split ``job`` (a row with every column) for ``renderers`` farmhands encoding with
    ``encoder``: the ids of its new pieces, parts first then the audio, all ``queued``; an empty
    list when it cannot be planned here or splitting does not pay."""
    planned = _plan(conn, job)
    if planned is None:
        return []
    compilation, plan = planned
    parts = split_plan(plan, renderers, min_work_s=min_work_s)
    if len(parts) < 2:
        return []
    built = msgspec.to_builtins(compilation)
    pieces: list[dict[str, Any]] = [
        {"kind": "part", "encoder": encoder, "title": f"part {p.index + 1} of {p.of}",
         "piece": {"index": p.index, "sources": list(p.sources), "part": msgspec.to_builtins(p)}}
        for p in parts
    ]  # fmt: skip
    pieces.append(
        {"kind": "audio", "encoder": None, "title": "audio",
         "piece": {"index": len(parts), "sources": list(audio_sources(plan))}}
    )  # fmt: skip
    ids = _add_pieces(conn, job, built, pieces, now)
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job.id, jobs.c.state == "queued")
        .values(state="running", stage=SPLIT_STAGE, progress=0.0, claimed_at=now, updated_at=now)
    )
    lifecycle.record_event(
        conn, job.id, "queued", "running",
        message=f"split into {len(parts)} parts and the audio, encoded with {encoder}", at=now,
    )  # fmt: skip
    return ids


# Pieces take their parent's place in the claim order (priority, then created_at, then id), one
# after another in the order they were planned: the parts, then the audio. Their ids alone would
# not keep that order (ids made in one millisecond differ only by their random tail).
PIECE_ORDER_STEP_S = 1e-5


def _add_pieces(
    conn: Connection, job: Any, compilation: dict, pieces: list[dict[str, Any]], now: float, *,
    first: int = 0,
) -> list[str]:  # fmt: skip
    """Queue ``pieces`` of ``job`` (the k-th at claim order ``first`` + k), each with the
    parent's tags and media: one statement per table, the parent's tags and media read once."""
    ids = [new_id("j") for _ in pieces]
    rows = []
    for k, (piece_id, piece) in enumerate(zip(ids, pieces, strict=True)):
        requirements = dict(job.requirements)
        if piece["encoder"]:
            requirements["encoder_name"] = piece["encoder"]
        rows.append(dict(
            id=piece_id, submitter_id=job.submitter_id,
            title=f"{job.title} — {piece['title']}" if job.title else piece["title"],
            state="queued", priority=job.priority, compilation=compilation,
            requirements=requirements, req_codec=job.req_codec, req_encoder=job.req_encoder,
            req_gpu_memory_mb=job.req_gpu_memory_mb, req_encoder_name=piece["encoder"],
            attempts=0, max_attempts=job.max_attempts, not_before=0.0, queued_at=now,
            failed_by=[], progress=0.0, estimate_s=None,
            created_at=job.created_at + (first + k) * PIECE_ORDER_STEP_S, updated_at=now,
            parent_id=job.id, kind=piece["kind"], piece=piece["piece"], split="never",
        ))  # fmt: skip
    conn.execute(insert(jobs), rows)
    tags = conn.execute(select(job_tags.c.tag).where(job_tags.c.job_id == job.id)).scalars().all()
    if tags:
        conn.execute(insert(job_tags), [{"job_id": i, "tag": t} for i in ids for t in tags])
    media_ids = conn.execute(
        select(job_media.c.media_id).where(job_media.c.job_id == job.id)
    ).scalars().all()  # fmt: skip
    if media_ids:
        conn.execute(
            insert(job_media), [{"job_id": i, "media_id": m} for i in ids for m in media_ids]
        )
    piece_of = f"a piece of job {job.id}"
    lifecycle.record_events(
        conn, [lifecycle.event_row(i, None, "queued", message=piece_of, at=now) for i in ids]
    )
    return ids


def children(conn: Connection, parent_id: str) -> list[Any]:
    """A split job's pieces, in order: parts, the audio, the join."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.kind, jobs.c.state, jobs.c.piece, jobs.c.lease_token)
        .where(jobs.c.parent_id == parent_id)
    ).all()  # fmt: skip
    order = {"part": 0, "audio": 1, "join": 2}
    return sorted(rows, key=lambda r: (order[r.kind], (r.piece or {}).get("index", 0)))


def add_join_when_ready(conn: Connection, parent_id: str, now: float) -> str | None:
    """After a piece succeeded: when every part and the audio have, the join is queued; its id
    (None while some piece is still to come, or when a join exists already)."""
    pieces = children(conn, parent_id)
    if any(p.kind == "join" for p in pieces):
        return None
    if not all(p.state == "succeeded" for p in pieces if p.kind in PIECES):
        return None
    parent = conn.execute(select(jobs).where(jobs.c.id == parent_id)).one()
    index = len([p for p in pieces if p.kind in PIECES])
    join = {"kind": "join", "encoder": None, "title": "join", "piece": {"index": index}}
    [join_id] = _add_pieces(conn, parent, parent.compilation, [join], now, first=index)
    return join_id


def abandon(conn: Connection, parent_id: str, why: str, now: float) -> list[tuple[str, str]]:
    """A piece failed for good: cancel the others and queue the parent to be rendered whole.
    Returns (job id, new state) of every job it moved."""
    moved = []
    for piece in children(conn, parent_id):
        if piece.state in ("queued", *ACTIVE_STATES):
            conn.execute(
                update(jobs)
                .where(jobs.c.id == piece.id, jobs.c.state == piece.state)
                .values(state="cancelled", lease_token=None, lease_expires_at=None,
                        stage="cancelled", finished_at=now, updated_at=now)
            )  # fmt: skip
            if piece.lease_token:
                lifecycle.end_attempt(conn, piece.lease_token, "cancelled", at=now, error=why)
            lifecycle.record_event(conn, piece.id, piece.state, "cancelled", message=why, at=now)
            moved.append((piece.id, "cancelled"))
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == parent_id, jobs.c.stage == SPLIT_STAGE)
        .values(state="queued", split="never", stage=None, progress=0.0, not_before=now,
                queued_at=now, updated_at=now)
    )  # fmt: skip
    if result.rowcount:
        message = f"the split was abandoned ({why}); rendering it whole"
        lifecycle.record_event(conn, parent_id, "running", "queued", message=message, at=now)
        moved.append((parent_id, "queued"))
    return moved
