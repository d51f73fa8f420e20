"""Database rows → the wire structs clients see. No queries here: callers select the columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import select

from board.infra.models import farmhands, jobs, outputs, submitters
from wire import (
    Capabilities,
    FarmhandView,
    JobView,
    MediaView,
    OutputInfo,
    PartView,
    Requirements,
)
from wire.routes import JOB_OUTPUT, JOB_THUMBNAIL, MEDIA_CONTENT, path


def to_dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


# JobView's fields that are the job's columns as they are stored, its times, and the columns it
# is made from (``kind``: a caller asks whether the job was split)
_AS_STORED = ("id", "title", "state", "priority", "attempts", "max_attempts", "stage", "eta_s",
              "encoder", "error", "idempotency_key", "estimate_s")  # fmt: skip
_TIMES = ("created_at", "updated_at", "claimed_at", "finished_at")
_ALSO_READ = ("requirements", "progress", "not_before", "kind")


# Columns for ``job_view``: the job's that it shows, its submitter's and farmhand's names, its
# output. Not the whole row: a job's compilation is JSON that every list and batch answer would
# decode and never show. Built once (a statement costs more to build than a short read).
JOB_SELECT = select(
    *(jobs.c[name] for name in (*_AS_STORED, *_TIMES, *_ALSO_READ)),
    submitters.c.name.label("submitter_name"),
    farmhands.c.name.label("farmhand_name"),
    outputs.c.size.label("out_size"),
    outputs.c.sha256.label("out_sha256"),
    outputs.c.duration_s.label("out_duration_s"),
    outputs.c.width.label("out_width"),
    outputs.c.height.label("out_height"),
    outputs.c.thumbnail_key.label("out_thumbnail_key"),
).select_from(
    jobs.join(submitters, submitters.c.id == jobs.c.submitter_id)
    .outerjoin(farmhands, farmhands.c.id == jobs.c.farmhand_id)
    .outerjoin(outputs, outputs.c.job_id == jobs.c.id)
)


def job_view(row: Any, pieces: list | None = None) -> JobView:
    """``row`` from ``JOB_SELECT``; ``pieces``: a split job's pieces (``jobs._PIECES`` rows),
    whose mean progress is the job's."""
    parts = [
        PartView(
            id=p.id, kind=p.kind, index=(p.piece or {}).get("index", 0), state=p.state,
            attempts=p.attempts, stage=p.stage, progress=p.progress or 0.0, farmhand=p.farmhand,
            error=p.error,
        )
        for p in sorted(pieces or (), key=lambda p: (p.piece or {}).get("index", 0))
    ]  # fmt: skip
    progress = row.progress or 0.0
    if parts and row.state == "running":
        progress = sum(p.progress for p in parts) / len(parts)
    output = None
    if row.out_size is not None:
        output = OutputInfo(
            size=row.out_size,
            sha256=row.out_sha256,
            duration_s=row.out_duration_s,
            width=row.out_width,
            height=row.out_height,
            url=path(JOB_OUTPUT, job_id=row.id),
            thumbnail_url=path(JOB_THUMBNAIL, job_id=row.id) if row.out_thumbnail_key else None,
        )
    return JobView(
        **{name: getattr(row, name) for name in _AS_STORED},
        **{name: to_dt(getattr(row, name)) for name in _TIMES},
        submitter=row.submitter_name,
        requirements=msgspec.convert(row.requirements, Requirements),
        progress=progress,
        farmhand=row.farmhand_name,
        not_before=to_dt(row.not_before) if row.state == "queued" else None,
        output=output,
        parts=parts,
    )


def media_view(row: Any) -> MediaView:
    get = row.get if isinstance(row, dict) else row._mapping.get
    info = get("probe") or {}
    return MediaView(
        id=get("id"),
        sha256=get("sha256"),
        size=get("size"),
        filename=get("filename"),
        created_at=to_dt(get("created_at")),
        duration_s=get("duration_s"),
        width=info.get("width") or None,
        height=info.get("height") or None,
        has_video=bool(info.get("has_video")),
        has_audio=bool(info.get("has_audio")),
        image=bool(info.get("image")),
        url=path(MEDIA_CONTENT, media_id=get("id")),
    )


def farmhand_view(row: Any, *, now: float, lease_s: float, current_jobs: list[str]) -> FarmhandView:
    caps = msgspec.convert(row.capabilities, Capabilities) if row.capabilities else None
    return FarmhandView(
        name=row.name,
        state=row.state,
        online=row.last_seen_at > now - lease_s,
        reason=row.state_reason,
        paused_by_owner=bool(row.owner_paused),
        owner_reason=row.owner_reason,
        last_seen_at=to_dt(row.last_seen_at),
        capabilities=caps,
        current_jobs=current_jobs,
        consecutive_failures=row.consecutive_failures,
        jobs_done=row.jobs_done,
        token=row.token_name or "",
    )
