"""The output upload straight to object storage: presigned parts, resumable, verified.

The protocol (``POST /api/v1/farmhand/jobs/{id}/output/multipart``, the context's
``output_url`` when the board keeps files in an object store; docs/architecture.md, "How a job
flows"):

1. The farmhand declares the file (``DirectUploadStart``: size, sha256, the part size it chose
   and every part's sha256). The board, after fencing the lease, begins a multipart upload to
   the lease's own key (``outputs/{job}/{lease tag}.mp4``, which nothing serves) and answers a
   presigned URL per part. Each URL signs the part's sha256: the store takes those bytes only.
2. The farmhand PUTs the parts to the store. After a cut it asks again with the same body: the
   board lists the parts the store holds and answers the missing ones, with fresh URLs.
3. ``complete`` (``commit``): the board checks that every part arrived with the declared size
   and checksum and has the store join them (naming each checksum again: the store refuses
   parts that differ), checks the object's size, reads its MP4 header by byte ranges and only
   then commits the output in the database. A single-part file is thus verified against the
   whole file's sha256 by the store itself; a larger one part by part, the whole-file sha256
   being the farmhand's, from the same pass over the same bytes. Reading the file back through
   the board to hash it again would undo the point of uploading it elsewhere.

The upload's facts are a note beside it (``uploads/{job}.{lease tag}.part.json``), so any board
process sharing the bucket can answer the next call. The janitor aborts the uploads and removes
the objects and notes of leases that ended (``board.domain.janitor``).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from board.domain.lifecycle import fence
from board.domain.outputs import THUMBNAIL_MAX, part_key, staged_key, thumb_key
from board.domain.tokens import Principal
from board.errors import BadRequest, Conflict
from board.infra.mp4_head import read_mp4_ranges
from board.infra.s3 import PartsMissing, S3Storage, UploadNotVerified, plan_parts, sha256_b64
from board.state import BoardState
from timeline.mp4info import Mp4Info
from wire import DirectUpload, DirectUploadStart, UploadPart


def declared_parts(start: DirectUploadStart, max_bytes: int) -> list[tuple[int, str]]:
    """(size, sha256) of every part ``start`` declares; BadRequest when they do not add up."""
    if start.size > max_bytes:
        raise BadRequest(f"the file's {start.size} bytes are over the board's limit of {max_bytes}")
    try:
        sizes = plan_parts(start.size, start.part_size)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if len(sizes) != len(start.parts_sha256):
        raise BadRequest(
            f"{start.size} bytes in parts of {start.part_size} make {len(sizes)} parts, but "
            f"{len(start.parts_sha256)} part checksums were sent"
        )
    if len(sizes) == 1 and start.parts_sha256[0] != start.sha256:
        raise BadRequest("a file sent in one part has that part's sha256")
    return list(zip(sizes, start.parts_sha256, strict=True))


def upload_plan(
    store: S3Storage,
    key: str,
    upload_id: str,
    part_size: int,
    declared: list[tuple[int, str]],
    *,
    fresh: bool = False,
) -> DirectUpload:
    """The parts of ``upload_id`` with what the store already holds marked done (nothing, for a
    ``fresh`` upload: no need to ask), the others with fresh presigned URLs. (Blocking.)"""
    stored = {} if fresh else {p.number: p for p in store.list_parts(key, upload_id) or []}
    parts = []
    for number, (size, sha) in enumerate(declared, 1):
        got = stored.get(number)
        done = got is not None and got.size == size and got.sha256_b64 in (None, sha256_b64(sha))
        url = "" if done else store.presigned_part(key, upload_id, number, sha)
        parts.append(UploadPart(number=number, size=size, url=url, done=done))
    expires = datetime.now(UTC) + timedelta(seconds=store.settings.url_expiry_s)
    return DirectUpload(upload_id=upload_id, part_size=part_size, parts=parts, expires_at=expires)


def _note_key(job_id: str, lease_token: str) -> str:
    return part_key(job_id, lease_token) + ".json"


async def begin_output_upload(
    board: BoardState,
    who: Principal,
    job_id: str,
    lease_token: str | None,
    start: DirectUploadStart,
) -> DirectUpload:
    """Begin the output upload of the job ``lease_token`` holds, or resume the one begun with
    the same declaration (a new declaration under the same lease starts over)."""
    if not lease_token:
        raise BadRequest("X-Lease-Token header missing")
    await fence(board, who, job_id, lease_token)
    store = board.storage
    if not isinstance(store, S3Storage):
        raise Conflict("this board keeps outputs on its own disk: PUT the file to …/output")
    declared = declared_parts(start, board.config.max_upload_bytes)
    facts = {"sha256": start.sha256, "size": start.size, "part_size": start.part_size,
             "parts": [sha for _, sha in declared]}  # fmt: skip
    key = staged_key(job_id, lease_token)
    note_key = _note_key(job_id, lease_token)

    def begin() -> DirectUpload:
        note = _read_json(store, note_key)
        if note is not None and {k: note.get(k) for k in facts} == facts:
            if store.list_parts(key, note["upload_id"]) is not None:
                return upload_plan(store, key, note["upload_id"], start.part_size, declared)
        if note is not None:  # another file, or its upload is gone: start over
            store.abort_multipart(key, note["upload_id"])
        upload_id = store.create_multipart(key)
        store.write_note(note_key, json.dumps({**facts, "upload_id": upload_id}))
        return upload_plan(store, key, upload_id, start.part_size, declared, fresh=True)

    return await asyncio.to_thread(begin)


def _read_json(store: S3Storage, key: str) -> dict | None:
    text = store.read_note(key)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def commit(store: S3Storage, job_id: str, lease_token: str) -> tuple[dict, Mp4Info, str | None]:
    """Join and check the output uploaded under ``lease_token`` (see the module's text); its
    note ({sha256, size}), MP4 header and thumbnail key (None: none, or not a picture). Raises
    Conflict when nothing complete was uploaded, UploadNotVerified when the parts differ from
    their declaration, Mp4Error when the file is not a readable MP4. (Blocking.)"""
    key = staged_key(job_id, lease_token)
    upload = _read_json(store, _note_key(job_id, lease_token))
    if upload is None:  # joined already (a complete asked again), or never uploaded
        note = _read_json(store, key + ".json")
        if note is None:
            raise Conflict(
                f"job {job_id}: no complete, verified output was uploaded under this lease; "
                "upload it before completing"
            )
    else:
        declared = list(zip(plan_parts(upload["size"], upload["part_size"]), upload["parts"],
                            strict=True))  # fmt: skip
        try:  # every part's size and checksum checked: together, the declared size
            store.complete_verified(key, upload["upload_id"], declared)
        except PartsMissing as exc:
            raise Conflict(
                f"job {job_id}: the output upload is unfinished: {exc.message}"
            ) from None
        except UploadNotVerified as exc:
            store.abort_multipart(key, upload["upload_id"])
            store.delete(_note_key(job_id, lease_token))
            raise BadRequest(f"job {job_id}: {exc.message}; upload again from byte 0") from None
        note = {"sha256": upload["sha256"], "size": upload["size"]}
        store.write_note(key + ".json", json.dumps(note))
        store.delete(_note_key(job_id, lease_token))
    info = read_mp4_ranges(
        lambda start, end: store.read_bytes(key, start, end), note["size"], store.temp_path()
    )
    return note, info, _checked_thumbnail(store, thumb_key(job_id, lease_token))


def _checked_thumbnail(store: S3Storage, key: str) -> str | None:
    """``key`` if the farmhand put a JPEG or PNG of at most THUMBNAIL_MAX bytes there; anything
    else there is removed (a missing thumbnail fails no job)."""
    head = store.read_head(key, 8)
    if head is None:
        return None
    magic, size = head
    if 0 < size <= THUMBNAIL_MAX and (
        magic.startswith(b"\xff\xd8") or magic.startswith(b"\x89PNG")
    ):
        return key
    store.delete(key)
    return None
