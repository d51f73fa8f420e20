"""Where a client gets or sends the bytes of media and outputs.

With files on the board's own disk every transfer goes through the board's routes (fenced by
the lease, or by the owner's token). With an object store (``Storage.direct``) the board hands
out presigned URLs instead: one key, one method, valid for ``BOARD_S3_URL_EXPIRY_S``; the bytes
move between the client and the store, and the client never holds the store's credentials. The
board decides who gets such a URL exactly as it decides who may use its own route: a farmhand
gets them in the context of the job its lease holds, a submitter for its own media and outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from board.domain.outputs import thumb_key
from board.state import BoardState
from wire.routes import (
    JOB_PIECE,
    JOB_UPLOAD,
    JOB_UPLOAD_MULTIPART,
    JOB_UPLOAD_THUMBNAIL,
    MEDIA_CONTENT,
    path,
)

if TYPE_CHECKING:
    from board.infra.s3 import S3Storage


def _store(board: BoardState) -> S3Storage | None:
    """The object store, or None for files on the board's disk (boto3 is not even imported)."""
    return board.storage if board.storage.direct else None  # type: ignore[return-value]


def media_url(board: BoardState, media_id: str, storage_key: str) -> str:
    """Where the farmhand holding a job downloads its media ``media_id``."""
    store = _store(board)
    if store is None:
        return path(MEDIA_CONTENT, media_id=media_id)
    return store.presigned_get(storage_key)


def piece_url(board: BoardState, join_id: str, piece_id: str, storage_key: str) -> str:
    """Where the farmhand holding the join ``join_id`` downloads the piece ``piece_id``."""
    store = _store(board)
    if store is None:
        return path(JOB_PIECE, job_id=join_id, piece_id=piece_id)
    return store.presigned_get(storage_key)


def output_upload_url(board: BoardState, job_id: str) -> str:
    """The route the farmhand holding ``job_id`` sends its output through."""
    if _store(board) is None:
        return path(JOB_UPLOAD, job_id=job_id)
    return path(JOB_UPLOAD_MULTIPART, job_id=job_id)


def thumbnail_upload_url(board: BoardState, job_id: str, lease_token: str) -> str:
    """Where the farmhand holding ``job_id`` under ``lease_token`` PUTs the thumbnail: the
    board's route, or a presigned PUT to the lease's own key (checked at ``complete``)."""
    store = _store(board)
    if store is None:
        return path(JOB_UPLOAD_THUMBNAIL, job_id=job_id)
    return store.presigned_put(thumb_key(job_id, lease_token))


def download_url(board: BoardState, storage_key: str, filename: str | None = None) -> str | None:
    """A presigned URL to send a download to (the board's route answers with a redirect), or
    None when the board serves the file itself."""
    store = _store(board)
    if store is None:
        return None
    return store.presigned_get(storage_key, filename=filename)
