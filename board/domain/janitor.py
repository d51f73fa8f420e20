"""The janitor: removes the files that dead leases left in storage.

An output upload is written under a per-lease name (``board.domain.outputs``) and becomes the job's
output only when ``complete`` commits it. A lease that ends any other way — expired, stalled,
failed, released, cancelled — leaves its partial or staged file behind, and nothing will ever
serve it. Each pass lists the upload files *first* and only then reads which leases are alive and
which outputs are committed: a file listed belongs to a lease granted before the read, so a live
lease's file is always seen as live.

In an object store an upload is also a *multipart upload* until it is joined: the store keeps
its parts (and bills for them) until someone aborts it. The janitor aborts those of dead leases
the same way (listed first), and a submitter's media upload begun and never finished once it is
older than ``BOARD_S3_UPLOAD_TTL_S``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.engine import Connection

from board.domain.outputs import lease_tag, upload_owner
from board.infra.models import jobs, outputs
from board.state import BoardState
from wire import ACTIVE_STATES

log = logging.getLogger("board.domain.janitor")


def _upload_files(board: BoardState) -> dict[str, list[tuple[str, str]]]:
    """job id → [(key, lease tag)] of every per-lease upload file in storage."""
    by_job: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for folder in ("uploads", "outputs"):
        for key in board.storage.keys(folder):
            owner = upload_owner(key)
            if owner is not None:
                by_job[owner[0]].append((key, owner[1]))
    return by_job


def _keep(conn: Connection, job_ids: list[str]) -> tuple[dict[str, str], set[str]]:
    """(job id → the lease tag still holding it, keys of committed outputs) for these jobs."""
    live_tags: dict[str, str] = {}
    committed: set[str] = set()
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        rows = conn.execute(
            select(jobs.c.id, jobs.c.state, jobs.c.lease_token).where(jobs.c.id.in_(chunk))
        )
        for row in rows:
            if row.state in ACTIVE_STATES and row.lease_token:
                live_tags[row.id] = lease_tag(row.lease_token)
        rows = conn.execute(
            select(outputs.c.storage_key, outputs.c.thumbnail_key).where(
                outputs.c.job_id.in_(chunk)
            )
        )
        for row in rows:
            committed.update(
                k for k in (row.storage_key, row.storage_key + ".json", row.thumbnail_key) if k
            )
    return live_tags, committed


def _delete_all(board: BoardState, keys: list[str]) -> None:
    for key in keys:
        board.storage.delete(key)


async def sweep_dead_uploads(board: BoardState) -> int:
    """One pass: delete upload files of leases that no longer hold their job, unless they are the
    job's committed output. Returns how many files went. Listing and deleting run in a thread
    and the read on a reader: a farm's worth of outputs never stalls the event loop. In an
    object store, unfinished uploads nobody will finish are aborted too (``abort_dead_uploads``)."""
    await abort_dead_uploads(board)
    by_job = await asyncio.to_thread(_upload_files, board)
    if not by_job:
        return 0
    live_tags, committed = await board.db.query(lambda conn: _keep(conn, list(by_job)))
    dead = [
        key
        for job_id, files in by_job.items()
        for key, tag in files
        if key not in committed and live_tags.get(job_id) != tag
    ]
    if dead:
        await asyncio.to_thread(_delete_all, board, dead)
        log.info("removed %d upload files of dead leases", len(dead))
    return len(dead)


async def abort_dead_uploads(board: BoardState) -> int:
    """Object store only: abort the multipart uploads of leases that no longer hold their job,
    and media uploads begun more than ``BOARD_S3_UPLOAD_TTL_S`` ago (by their note: not every
    store dates its uploads truly), or left without a note. Returns how many uploads went."""
    store = board.storage
    if not store.direct:
        return 0
    ttl = board.config.s3.upload_ttl_s
    uploads = await asyncio.to_thread(store.multipart_uploads)  # listed before the reads
    now = time.time()
    owners = {key: upload_owner(key) for key, _, _ in uploads}
    jobs_of = sorted({owner[0] for owner in owners.values() if owner is not None})
    live_tags = (await board.db.query(lambda conn: _keep(conn, jobs_of)))[0] if jobs_of else {}

    def clear() -> int:
        begun: dict[str, float] = {}  # media key → when its upload began, by its note
        for key in store.keys("incoming"):
            try:
                note = json.loads(store.read_note(key) or "{}")
            except ValueError:
                note = {}
            if note.get("created_at", 0) < now - ttl:
                store.delete(key)
            elif "media_id" in note:
                begun[f"media/{note['media_id'][-2:]}/{note['media_id']}"] = note["created_at"]
        aborted = 0
        for key, upload_id, initiated in uploads:
            owner = owners[key]
            if owner is not None:
                dead = live_tags.get(owner[0]) != owner[1]
            else:
                dead = (
                    key.startswith("media/")
                    and key not in begun
                    and (initiated.timestamp() < now - ttl)
                )
            if dead:
                store.abort_multipart(key, upload_id)
                aborted += 1
        return aborted

    aborted = await asyncio.to_thread(clear)
    if aborted:
        log.info("aborted %d unfinished uploads to object storage", aborted)
    return aborted
