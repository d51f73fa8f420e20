"""The janitor: removes the files that dead leases left in storage.

An output upload is written under a per-lease name (``board.outputs``) and becomes the job's
output only when ``complete`` commits it. A lease that ends any other way — expired, stalled,
failed, released, cancelled — leaves its partial or staged file behind, and nothing will ever
serve it. Each pass lists the upload files *first* and only then reads which leases are alive and
which outputs are committed: a file listed belongs to a lease granted before the read, so a live
lease's file is always seen as live.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from sqlalchemy import select

from board.models import jobs, outputs
from board.outputs import lease_tag, upload_owner
from board.state import BoardState
from wire import ACTIVE_STATES

log = logging.getLogger("board.janitor")


async def sweep_dead_uploads(board: BoardState) -> int:
    """One pass: delete upload files of leases that no longer hold their job, unless they are the
    job's committed output. Returns how many files went."""
    by_job: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for folder in ("uploads", "outputs"):
        for key in board.storage.keys(folder):
            owner = upload_owner(key)
            if owner is not None:
                by_job[owner[0]].append((key, owner[1]))
    if not by_job:
        return 0
    live_tags: dict[str, str] = {}
    committed: set[str] = set()
    async with board.db.read() as conn:
        ids = list(by_job)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = await conn.execute(
                select(jobs.c.id, jobs.c.state, jobs.c.lease_token).where(jobs.c.id.in_(chunk))
            )
            for row in rows:
                if row.state in ACTIVE_STATES and row.lease_token:
                    live_tags[row.id] = lease_tag(row.lease_token)
            rows = await conn.execute(
                select(outputs.c.storage_key, outputs.c.thumbnail_key).where(
                    outputs.c.job_id.in_(chunk)
                )
            )
            for row in rows:
                committed.update(
                    k for k in (row.storage_key, row.storage_key + ".json", row.thumbnail_key) if k
                )
    removed = 0
    for job_id, files in by_job.items():
        for key, tag in files:
            if key in committed or live_tags.get(job_id) == tag:
                continue
            board.storage.delete(key)
            removed += 1
    if removed:
        log.info("removed %d upload files of dead leases", removed)
    return removed
