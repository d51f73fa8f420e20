"""Submitter limits: what a submitter may ask for, and how a compilation is capped to fit.

Checked at submit (clip count, the monthly render-seconds estimate, the storage quota) and
applied again when a farmhand fetches the context (resolution, fps, clip count, forced
watermark), so a limit an admin tightens later still holds for jobs already queued.

Render seconds: a job's estimate counts while it is queued or running (a URL clip, whose length
nobody knows before a farmhand fetches it, at ``BOARD_URL_CLIP_ESTIMATE_S``); once it succeeds
the month is charged the real length of its output instead, and a job that ends otherwise costs
nothing. Storage: the submitter's media and outputs count. Uploads past the quota are refused,
and so is a submit once the quota is used up. An accepted job's output is always kept, even past
the quota: refusing it at completion would throw away a farmhand's render.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from board.errors import BadRequest, Forbidden
from board.infra.models import jobs, media, outputs, submitters, usage
from timeline.spec import Compilation, Watermark
from wire import Limits

# every limit, named alike in ``Limits``, the submitters table and ``board limits set``'s flags
LIMIT_FIELDS = tuple(f.name for f in msgspec.structs.fields(Limits))


@dataclass(frozen=True)
class SubmitterLimits:
    submitter_id: int
    name: str
    limits: Limits


def load_limits(conn: Connection, submitter_id: int) -> SubmitterLimits:
    row = (conn.execute(select(submitters).where(submitters.c.id == submitter_id))).first()
    limits = Limits(**{name: getattr(row, name) for name in LIMIT_FIELDS})
    return SubmitterLimits(submitter_id=row.id, name=row.name, limits=limits)


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def apply_limits(compilation: Compilation, limits: Limits) -> tuple[Compilation, list[str]]:
    """The compilation capped to the limits, and a line per change (shown to the farmhand and on
    the dashboard). Resolution scales down keeping the aspect ratio."""
    notes: list[str] = []
    out = compilation.output
    width, height, fps = out.width, out.height, out.fps
    scale = 1.0
    if limits.max_width and width > limits.max_width:
        scale = min(scale, limits.max_width / width)
    if limits.max_height and height > limits.max_height:
        scale = min(scale, limits.max_height / height)
    if scale < 1.0:
        width, height = _even(width * scale), _even(height * scale)
        notes.append(f"resolution capped to {width}x{height}")
    if limits.max_fps and fps > limits.max_fps:
        fps = limits.max_fps
        notes.append(f"fps capped to {fps:g}")
    changes: dict = {}
    if (width, height, fps) != (out.width, out.height, out.fps):
        changes["output"] = msgspec.structs.replace(out, width=width, height=height, fps=fps)
    if limits.max_clips and len(compilation.clips) > limits.max_clips:
        changes["clips"] = compilation.clips[: limits.max_clips]
        notes.append(f"clips cut to the first {limits.max_clips}")
    if limits.forced_watermark and (
        compilation.watermark is None or compilation.watermark.media != limits.forced_watermark
    ):
        changes["watermark"] = Watermark(media=limits.forced_watermark)
        notes.append("watermark forced by the submitter's limits")
    if changes:
        compilation = msgspec.structs.replace(compilation, **changes)
    return compilation, notes


def check_clip_count(compilation: Compilation, limits: Limits) -> None:
    if limits.max_clips and len(compilation.clips) > limits.max_clips:
        raise BadRequest(
            f"{len(compilation.clips)} clips, but this submitter may use at most {limits.max_clips}"
        )


def month_of(epoch: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(epoch))


def render_seconds_committed(conn: Connection, submitter_id: int, now: float) -> float:
    """Seconds rendered this month plus the estimates of this submitter's unfinished jobs."""
    used = (
        conn.execute(
            select(func.coalesce(func.sum(usage.c.render_seconds), 0.0)).where(
                usage.c.submitter_id == submitter_id, usage.c.month == month_of(now)
            )
        )
    ).scalar()
    pending = (
        conn.execute(
            select(func.coalesce(func.sum(jobs.c.estimate_s), 0.0)).where(
                jobs.c.submitter_id == submitter_id,
                jobs.c.state.in_(("queued", "claimed", "running")),
            )
        )
    ).scalar()
    return float(used) + float(pending)


def check_render_seconds(
    conn: Connection, sub: SubmitterLimits, estimate_s: float, now: float, also_s: float = 0.0
) -> None:
    """Refuse a submit whose honest estimate does not fit in what is left of the month.
    ``also_s``: estimates of jobs accepted in this transaction but not written yet."""
    allowed = sub.limits.monthly_render_seconds
    if allowed is None:
        return
    committed = render_seconds_committed(conn, sub.submitter_id, now) + also_s
    left = max(0.0, allowed - committed)
    if estimate_s > left:
        raise Forbidden(
            f"this compilation is estimated at {estimate_s:.1f} s of video, but only {left:.1f} s "
            f"of the {allowed:.0f} monthly render seconds are left for {sub.name}"
        )


def check_storage_quota(conn: Connection, sub: SubmitterLimits) -> None:
    """Refuse a submit when the submitter's media and outputs already fill its storage quota:
    the new job's output would have no room."""
    quota = sub.limits.storage_quota_bytes
    if quota is None:
        return
    used = storage_used(conn, sub.submitter_id)
    if used >= quota:
        raise Forbidden(
            f"{sub.name} stores {used} bytes of media and outputs, its whole storage quota of "
            f"{quota} bytes, so a new job's output has no room; delete outputs, jobs or media "
            "(DELETE /api/v1/jobs/{id}/output, /api/v1/jobs/{id}, /api/v1/media/{id}) first"
        )


def storage_used(conn: Connection, submitter_id: int) -> int:
    """Bytes of the submitter's media and of its jobs' outputs."""
    media_bytes = (
        conn.execute(
            select(func.coalesce(func.sum(media.c.size), 0)).where(
                media.c.submitter_id == submitter_id
            )
        )
    ).scalar()
    output_bytes = (
        conn.execute(
            select(func.coalesce(func.sum(outputs.c.size), 0))
            .select_from(outputs.join(jobs, jobs.c.id == outputs.c.job_id))
            .where(jobs.c.submitter_id == submitter_id)
        )
    ).scalar()
    return int(media_bytes) + int(output_bytes)
