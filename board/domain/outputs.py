"""Rendered outputs: the resumable, verified upload from a farmhand and the committed result.

Protocol (``PUT /api/v1/farmhand/jobs/{id}/output``): headers ``X-Lease-Token``,
``X-Upload-Sha256`` and ``X-Upload-Size`` declare the whole file; ``Content-Range: bytes
START-END/TOTAL`` says where this body goes (absent = from 0). The answer is an ``UploadStatus``:
after a broken connection the farmhand asks (``GET`` same URL) how much arrived and continues from
``received``. When the last byte arrives the file is checked against the declared size and sha256
and moved to a per-lease name that nothing serves until ``complete`` commits it in the database —
so a partial or wrong file is never visible, and a zombie's upload can never replace the output.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterable

from sqlalchemy import select

from board.domain.lifecycle import complete, fence
from board.domain.splits import PIECES
from board.domain.tokens import Principal
from board.errors import BadRequest, Conflict, NotFound, RangeNotSatisfiable, lease_lost
from board.infra.models import jobs, outputs
from board.state import BoardState
from timeline.mp4info import Mp4Error, Mp4Info, read_mp4
from wire import LEASE_HEADER, Complete, UploadStatus

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+|\*)/(\d+)$")
THUMBNAIL_MAX = 5 * 1024 * 1024
LEASE_RECHECK_S = 1.0  # an upload body longer than this checks its lease again at the end
_locks: dict[str, asyncio.Lock] = {}


def lease_tag(lease_token: str) -> str:
    """The lease's mark in file names (the token itself is a secret and never written down)."""
    return hashlib.sha256(lease_token.encode()).hexdigest()[:24]


def part_key(job_id: str, lease_token: str) -> str:
    return f"uploads/{job_id}.{lease_tag(lease_token)}.part"


def staged_key(job_id: str, lease_token: str) -> str:
    return f"outputs/{job_id}/{lease_tag(lease_token)}.mp4"


def thumb_key(job_id: str, lease_token: str) -> str:
    return f"outputs/{job_id}/{lease_tag(lease_token)}.jpg"


_UPLOAD_FILE = re.compile(
    r"^(?:uploads/(?P<job>[A-Za-z0-9_-]+)\.(?P<tag>[0-9a-f]{24})\.part(?:\.json)?"
    r"|outputs/(?P<job2>[A-Za-z0-9_-]+)/(?P<tag2>[0-9a-f]{24})\.(?:mp4|mp4\.json|jpg))$"
)


def upload_owner(key: str) -> tuple[str, str] | None:
    """(job id, lease tag) of a file an upload made (a part, a staged or committed output, a
    thumbnail, their checksum notes); None for any other key."""
    match = _UPLOAD_FILE.match(key)
    if match is None:
        return None
    return match["job"] or match["job2"], match["tag"] or match["tag2"]


async def _check_lease(
    board: BoardState, who: Principal, job_id: str, lease_token: str | None
) -> None:
    if not lease_token:
        raise BadRequest(f"{LEASE_HEADER} header missing")
    await fence(board, who, job_id, lease_token)


def _declared(sha256: str | None, size: str | None, max_bytes: int) -> tuple[str, int]:
    sha = (sha256 or "").lower()
    if not _SHA256.match(sha):
        raise BadRequest("X-Upload-Sha256 must be the file's sha256 as 64 hex digits")
    try:
        total = int(size or "")
    except ValueError:
        raise BadRequest("X-Upload-Size must be the file's size in bytes") from None
    if total <= 0:
        raise BadRequest("X-Upload-Size must be positive: an empty output is not a video")
    if total > max_bytes:
        raise BadRequest(f"X-Upload-Size {total} is over the board's limit of {max_bytes} bytes")
    return sha, total


def _start_of(content_range: str | None, total: int) -> int:
    if not content_range:
        return 0
    match = _CONTENT_RANGE.match(content_range.strip())
    if not match or int(match.group(3)) != total:
        raise BadRequest(f"Content-Range {content_range!r} must be 'bytes START-END/{total}'")
    return int(match.group(1))


def _on_own_disk(board: BoardState) -> None:
    """Conflict when the board keeps files in an object store: the bytes go there directly."""
    if board.storage.direct:
        raise Conflict(
            "this board keeps outputs in object storage: send the file through the context's "
            "output_url (…/output/multipart) and the thumbnail to its thumbnail_url"
        )


async def upload_status(
    board: BoardState, who: Principal, job_id: str, lease_token: str | None
) -> UploadStatus:
    await _check_lease(board, who, job_id, lease_token)
    _on_own_disk(board)
    return _status(board, job_id, lease_token)


def _status(board: BoardState, job_id: str, lease_token: str) -> UploadStatus:
    storage = board.storage
    staged = staged_key(job_id, lease_token)
    if storage.exists(staged):
        size = storage.size(staged)
        return UploadStatus(received=size, size=size, complete=True)
    part = part_key(job_id, lease_token)
    meta = _read_meta(board, part)
    received = storage.size_or_zero(part)
    return UploadStatus(received=received, size=meta.get("size") if meta else None)


def _read_meta(board: BoardState, part: str) -> dict | None:
    path = board.storage.local_path(part + ".json")
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_meta(board: BoardState, part: str, sha: str, size: int) -> None:
    board.storage.write_note(part + ".json", json.dumps({"sha256": sha, "size": size}))


def _discard(board: BoardState, part: str) -> None:
    board.storage.delete(part)
    board.storage.delete(part + ".json")


async def receive_output(
    board: BoardState,
    who: Principal,
    job_id: str,
    *,
    lease_token: str | None,
    sha256: str | None,
    size: str | None,
    content_range: str | None,
    chunks: AsyncIterable[bytes],
) -> UploadStatus:
    """Append one body of the output upload; verify and stage the file when it is whole."""
    await _check_lease(board, who, job_id, lease_token)  # 409 before anything else
    _on_own_disk(board)
    checked_at = time.monotonic()
    sha, total = _declared(sha256, size, board.config.max_upload_bytes)
    start = _start_of(content_range, total)
    part = part_key(job_id, lease_token)
    lock = _locks.setdefault(part, asyncio.Lock())
    async with lock:
        storage = board.storage
        staged = staged_key(job_id, lease_token)
        fresh = start == 0 or _read_meta(board, part) != {"sha256": sha, "size": total}
        if fresh:  # a new file (or a restart from zero): begin afresh, the note first
            storage.delete(staged)
            _write_meta(board, part, sha, total)  # replaces an older note; append truncates
            received = 0
        else:
            received = storage.size_or_zero(part)
        if start != received:
            if fresh:
                storage.delete(part)  # what an older attempt left cannot be continued
            raise RangeNotSatisfiable(
                f"upload continues at byte {start}, but the board has {received} bytes; "
                f"resume from {received}"
            )
        # From byte 0 the whole file passes through this body: hash it as it arrives.
        digest = hashlib.sha256() if start == 0 else None
        received = await storage.append(
            part, chunks, max_total=total, digest=digest, truncate=fresh
        )
        if received < total:
            return UploadStatus(received=received, size=total, complete=False)
        if time.monotonic() - checked_at > LEASE_RECHECK_S:
            # The lease may have ended while the bytes came in. (A body that took less than
            # this came in under a lease just checked; ``complete`` fences the lease in its own
            # transaction anyway.)
            await _check_lease(board, who, job_id, lease_token)
        actual = digest.hexdigest() if digest is not None else await storage.sha256(part)
        if actual != sha:
            _discard(board, part)
            raise BadRequest(
                f"sha256 mismatch: the board received {actual}, the farmhand "
                f"declared {sha}; upload again from byte 0"
            )
        # The note first: a staged file is never without it. The part's note says the same and
        # is moved; when the disk is too full for the job's folder: 507, the whole part stays,
        # and the farmhand's retry stages it.
        try:
            storage.move_in(storage.key_path(part + ".json"), staged + ".json")
        except FileNotFoundError:  # the part's note is gone (a janitor racing): write it anew
            storage.write_note(staged + ".json", json.dumps({"sha256": sha, "size": total}))
        try:
            storage.move_in(storage.key_path(part), staged)
        except FileNotFoundError:  # the janitor took the part: its lease ended meanwhile
            raise lease_lost(job_id, "the upload was discarded with its lease") from None
    _locks.pop(part, None)
    return UploadStatus(received=total, size=total, complete=True)


async def receive_thumbnail(
    board: BoardState,
    who: Principal,
    job_id: str,
    lease_token: str | None,
    chunks: AsyncIterable[bytes],
) -> None:
    await _check_lease(board, who, job_id, lease_token)
    _on_own_disk(board)
    key = thumb_key(job_id, lease_token)
    written = await board.storage.put_stream(key, chunks, max_bytes=THUMBNAIL_MAX)
    with open(board.storage.local_path(key), "rb") as f:
        magic = f.read(8)
    if written.size == 0 or not (magic.startswith(b"\xff\xd8") or magic.startswith(b"\x89PNG")):
        board.storage.delete(key)
        raise BadRequest("a thumbnail must be a JPEG or PNG image")


async def complete_job(board: BoardState, who: Principal, job_id: str, done: Complete) -> None:
    """Commit the staged output of this lease and mark the job succeeded. The file's own MP4
    header gives the duration recorded as usage (read in-process: no ffprobe per hand-in).
    In an object store the parts are joined and checked first (``direct_outputs.commit``)."""
    storage = board.storage
    staged = staged_key(job_id, done.lease_token)
    if storage.direct:
        from board.domain.direct_outputs import commit

        await _check_lease(board, who, job_id, done.lease_token)  # no joining for a zombie
        try:
            note, info, thumb = await asyncio.to_thread(commit, storage, job_id, done.lease_token)
        except Mp4Error as exc:
            raise BadRequest(
                f"the uploaded output of job {job_id} is not a readable video (MP4): {exc}"
            ) from None
        await _commit(board, who, job_id, done, note, info, staged, thumb)
        return
    path = storage.key_path(staged)
    try:
        info = read_mp4(path)
        with open(path + ".json") as f:  # staged before the file: there unless swept
            note = json.load(f)
    except (Mp4Error, FileNotFoundError) as exc:
        if isinstance(exc, FileNotFoundError) or isinstance(exc.__cause__, FileNotFoundError):
            await _check_lease(board, who, job_id, done.lease_token)  # stale: 409 LeaseLost
            raise Conflict(
                f"job {job_id}: no complete, verified output was uploaded under this lease; "
                "upload it before completing"
            ) from None
        raise BadRequest(
            f"the uploaded output of job {job_id} is not a readable video (MP4): {exc}"
        ) from None
    thumb = thumb_key(job_id, done.lease_token)
    await _commit(board, who, job_id, done, note, info, staged,
                  thumb if storage.exists(thumb) else None)  # fmt: skip


async def _commit(
    board: BoardState,
    who: Principal,
    job_id: str,
    done: Complete,
    note: dict,
    info: Mp4Info,
    staged: str,
    thumb: str | None,
) -> None:
    """Record the checked output and mark the job succeeded (fenced by the lease)."""
    if not info.duration_s or not (info.has_video or info.has_audio):
        raise BadRequest(f"the uploaded output of job {job_id} has no video or sound in it")
    await complete(
        board,
        job_id,
        done,
        who,
        output={
            "sha256": note["sha256"],
            "size": note["size"],  # the staged file was checked to be this size and checksum
            "duration_s": info.duration_s,
            "width": info.width,
            "height": info.height,
            "storage_key": staged,
            "thumbnail_key": thumb,
        },
    )


async def output_location(board: BoardState, job_id: str) -> tuple[str, str | None, int]:
    """(storage key, thumbnail key, size) of a succeeded job's output."""
    query = (
        select(outputs.c.storage_key, outputs.c.thumbnail_key, outputs.c.size)
        .select_from(outputs.join(jobs, jobs.c.id == outputs.c.job_id))
        .where(outputs.c.job_id == job_id, jobs.c.state == "succeeded")
    )
    row = await board.db.query(lambda conn: conn.execute(query).first())
    if row is None:
        return "", None, 0
    return row.storage_key, row.thumbnail_key, row.size


async def piece_for_join(
    board: BoardState, who: Principal, join_id: str, lease_token: str | None, piece_id: str
) -> tuple[str, int]:
    """(storage key, size) of the output of ``piece_id``, a piece the join held under
    ``lease_token`` may download: a succeeded part or audio track of the same split job."""
    await _check_lease(board, who, join_id, lease_token)
    join = jobs.alias("join_job")
    query = (
        select(outputs.c.storage_key, outputs.c.size)
        .select_from(
            outputs.join(jobs, jobs.c.id == outputs.c.job_id).join(
                join, join.c.parent_id == jobs.c.parent_id
            )
        )
        .where(
            jobs.c.id == piece_id,
            jobs.c.kind.in_(PIECES),
            jobs.c.state == "succeeded",
            join.c.id == join_id,
            join.c.kind == "join",
        )
    )
    row = await board.db.query(lambda conn: conn.execute(query).first())
    if row is None:
        raise NotFound(f"no piece {piece_id} for the join {join_id}")
    return row.storage_key, row.size
