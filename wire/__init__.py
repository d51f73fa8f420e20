"""The wire contract between board, farmhands, scripts and the dashboard.

Every JSON body that crosses HTTP is one of these msgspec structs, defined once here and imported
by both sides. This module pulls in nothing heavy (stdlib + msgspec + the timeline spec), so a
farmhand installs without the board's server dependencies.

Times on the wire are ISO 8601 UTC datetimes. Ids are strings.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, get_args

import msgspec
from msgspec import Meta, Struct

from timeline.spec import Codec, Compilation
from wire.errors import error_detail  # noqa: F401  (clients import it from here too)
from wire.routes import API  # noqa: F401

# Headers of the farmhand's job calls that carry no JSON body (uploads, media downloads).
LEASE_HEADER = "X-Lease-Token"
UPLOAD_SHA256_HEADER = "X-Upload-Sha256"
UPLOAD_SIZE_HEADER = "X-Upload-Size"
# A part sent straight to object storage carries its sha256 (base64) in this header, which its
# presigned URL signs: the store takes only those bytes.
PART_CHECKSUM_HEADER = "x-amz-checksum-sha256"

Role = Literal["admin", "submitter", "farmhand"]
JobState = Literal["queued", "claimed", "running", "succeeded", "failed", "cancelled"]
JOB_STATES: tuple[str, ...] = get_args(JobState)
ACTIVE_STATES: tuple[str, ...] = ("claimed", "running")  # a job held under a lease
FINAL_STATES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
EncoderPolicy = Literal["gpu", "cpu", "any"]
# What a job renders: a whole compilation, or a piece of one split across farmhands (a run of
# its video segments, its audio track, or the join of the pieces). docs/architecture.md,
# "Split render".
JobKind = Literal["render", "part", "audio", "join"]
SplitPolicy = Literal["auto", "never"]
Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]
Fraction = Annotated[float, Meta(ge=0, le=1)]
ShortText = Annotated[str, Meta(max_length=2000)]
LongText = Annotated[str, Meta(max_length=20_000)]
Token = Annotated[str, Meta(min_length=1, max_length=200)]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]


class WireStruct(Struct, forbid_unknown_fields=False, omit_defaults=False):
    """Base of every wire struct: unknown fields from newer peers are ignored, not refused."""


# ---------------------------------------------------------------- capabilities and requirements


class Gpu(WireStruct):
    name: Annotated[str, Meta(max_length=200)]
    memory_mb: Annotated[int, Meta(ge=0)] = 0


class Capabilities(WireStruct):
    """What a farmhand verified it can do (docs/architecture.md, "Claim rules")."""

    encoders: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=64)] = []
    gpus: Annotated[list[Gpu], Meta(max_length=16)] = []
    cores: Annotated[int, Meta(ge=0, le=4096)] = 1
    memory_mb: Annotated[int, Meta(ge=0)] = 0
    disk_free_mb: Annotated[int, Meta(ge=0)] = 0
    ffmpeg_version: Annotated[str, Meta(max_length=200)] = ""
    tags: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=64)] = []
    slots: Annotated[int, Meta(ge=1, le=64)] = 1


class Requirements(WireStruct):
    """What a job needs from a farmhand. ``codec`` defaults to the output codec."""

    codec: Codec | None = None
    encoder: EncoderPolicy = "any"
    tags: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=32)] = []
    min_gpu_memory_mb: Annotated[int, Meta(ge=0, le=1_000_000)] = 0


# ---------------------------------------------------------------- submitters


class SubmitJob(WireStruct, forbid_unknown_fields=True):
    """``POST /api/v1/jobs`` body."""

    compilation: Compilation
    priority: Annotated[int, Meta(ge=-1000, le=1000)] = 0
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    requirements: Requirements | None = None
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 3
    # ``auto``: the board may render it in parts on several farmhands at once when that pays
    split: SplitPolicy = "auto"


class SubmitBatch(WireStruct, forbid_unknown_fields=True):
    """``POST /api/v1/jobs/batch`` body: many jobs, each answered on its own."""

    jobs: Annotated[list[SubmitJob], Meta(min_length=1, max_length=500)]


class OutputInfo(WireStruct):
    size: int
    sha256: str
    duration_s: float
    width: int = 0
    height: int = 0
    url: str = ""
    thumbnail_url: str | None = None


class JobView(WireStruct):
    """A job as submitters and the dashboard see it."""

    id: str
    title: str
    state: JobState
    priority: int
    submitter: str
    created_at: datetime
    updated_at: datetime
    requirements: Requirements
    attempts: int
    max_attempts: int
    stage: str | None = None
    progress: float = 0.0
    eta_s: float | None = None
    farmhand: str | None = None
    encoder: str | None = None
    error: str | None = None
    idempotency_key: str | None = None
    not_before: datetime | None = None
    claimed_at: datetime | None = None
    finished_at: datetime | None = None
    estimate_s: float | None = None
    output: OutputInfo | None = None
    parts: list[PartView] = []  # a split job's pieces, in order (empty when it is not split)


class PartView(WireStruct):
    """One piece of a split job: who renders it, how far it is."""

    id: str
    kind: JobKind
    index: int  # the part's place (video parts from 0; the audio and the join after them)
    state: JobState
    attempts: int
    stage: str | None = None
    progress: float = 0.0
    farmhand: str | None = None
    error: str | None = None


class JobPage(WireStruct):
    items: list[JobView]
    total: int
    limit: int
    offset: int


class BatchItem(WireStruct):
    """One answer of a batch submit: ``status`` is the HTTP status the single submit would give."""

    index: int
    status: int
    job: JobView | None = None
    error: str | None = None


class BatchResult(WireStruct):
    items: list[BatchItem]
    created: int
    existing: int
    rejected: int


class JobEvent(WireStruct):
    at: datetime
    from_state: str | None
    to_state: str
    farmhand: str | None = None
    message: str = ""


class AttemptView(WireStruct):
    number: int
    farmhand: str | None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str | None = None
    encoder: str | None = None
    error: str | None = None
    stderr_tail: str | None = None


class MediaView(WireStruct):
    """An uploaded piece of media, probed at upload."""

    id: str
    sha256: str
    size: int
    filename: str
    created_at: datetime
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    has_video: bool = False
    has_audio: bool = False
    image: bool = False
    url: str = ""


# ---------------------------------------------------------------- farmhands


class ClaimRequest(WireStruct):
    """``POST /api/v1/farmhand/claim``: ask for one job; waits up to ``wait_s`` for one."""

    farmhand: Name
    capabilities: Capabilities
    wait_s: Annotated[float, Meta(ge=0, le=30)] = 0.0
    running: Annotated[list[str], Meta(max_length=64)] = []  # job ids this farmhand still holds


class Claim(WireStruct):
    job_id: str
    lease_token: str
    lease_expires_at: datetime
    heartbeat_interval_s: float


class Heartbeat(WireStruct):
    lease_token: Token
    stage: Annotated[str, Meta(max_length=100)] = "rendering"
    progress: Fraction = 0.0
    fps: Annotated[float, Meta(ge=0)] | None = None
    speed: Annotated[float, Meta(ge=0)] | None = None
    eta_s: Annotated[float, Meta(ge=0)] | None = None
    message: ShortText | None = None


class HeartbeatReply(WireStruct):
    lease_expires_at: datetime
    cancel: bool = False


class Complete(WireStruct):
    lease_token: Token
    encoder: Annotated[str, Meta(max_length=64)] = ""
    render_s: Annotated[float, Meta(ge=0)] | None = None
    stderr_tail: LongText = ""


class Fail(WireStruct):
    lease_token: Token
    error: Annotated[str, Meta(min_length=1, max_length=5000)]
    retryable: bool = True
    encoder: Annotated[str, Meta(max_length=64)] = ""
    stderr_tail: LongText = ""


class Release(WireStruct):
    """Give a job back untouched (farmhand shutting down): requeued at once, no attempt counted."""

    lease_token: Token
    reason: ShortText = "farmhand shutting down"


class FarmhandStatus(WireStruct):
    """``POST /api/v1/farmhand/status``: a farmhand says it is alive, and why it is not claiming."""

    farmhand: Name
    paused: bool = False
    reason: ShortText = ""
    capabilities: Capabilities | None = None


class FarmhandStatusReply(WireStruct):
    """The board's view of the farmhand: ``state`` set by an admin (active, paused, draining,
    quarantined, revoked) and why."""

    state: str
    reason: str = ""


class MediaRef(WireStruct):
    """A board media file as a farmhand downloads it."""

    id: str
    url: str  # a path on the board (/api/v1/media/{id}/content) or a presigned URL
    size: int
    sha256: str
    filename: str


class JobContext(WireStruct):
    """``GET /api/v1/farmhand/jobs/{id}/context``: everything needed to render, in one call.

    ``compilation`` has the submitter's limits applied (resolution, fps, clip count, forced
    watermark). Every ``{"media": id}`` source in it is described in ``media``; ``{"url": ...}``
    sources are fetched by the farmhand itself.
    """

    job_id: str
    title: str
    compilation: Compilation
    requirements: Requirements
    media: dict[str, MediaRef]
    # where the rendered file goes: the board's resumable PUT route (``routes.JOB_UPLOAD``) or,
    # when the board keeps outputs in object storage, its multipart route
    # (``routes.JOB_UPLOAD_MULTIPART``: POST a DirectUploadStart, send the parts it answers)
    output_url: str
    thumbnail_url: str
    attempt: int
    heartbeat_interval_s: float
    limits_applied: list[str] = []
    kind: JobKind = "render"
    # part, audio: the ``Source.key`` of every source this piece reads (fetch only those)
    sources: list[str] | None = None
    # part: the piece to render (``timeline.split.Part`` as plain data)
    part: dict | None = None
    # part: the encoder every part of the split is encoded with (a stream-copy join needs one)
    encoder: str = ""
    # join: the pieces to join, downloaded like media (video parts in order, then the audio)
    pieces: list[Piece] = []
    # part, audio: the board's probe of every media source (``Source.key`` → the facts of a
    # ``timeline.probe.MediaInfo``), for planning the whole compilation without fetching it all
    probes: dict[str, dict] = {}


class Piece(WireStruct):
    """A rendered piece of a split job, as the join step downloads it."""

    job_id: str
    kind: JobKind
    url: str
    size: int
    sha256: str
    part: dict | None = None  # a video part: its ``timeline.split.Part``; None: the audio


class JobMoved(WireStruct):
    """Answer to a farmhand's complete, fail or release: the job's state now."""

    state: JobState


class DirectUploadStart(WireStruct, forbid_unknown_fields=True):
    """Begin (or resume) an upload straight to the board's object storage: the whole file's
    size and sha256, the part size the sender chose (5 MiB to 5 GiB; the last part may be
    smaller) and every part's sha256, in order. Asking again with the same body resumes."""

    size: Annotated[int, Meta(gt=0)]
    sha256: Sha256Hex
    part_size: Annotated[int, Meta(ge=5 * 1024**2, le=5 * 1024**3)]
    parts_sha256: Annotated[list[Sha256Hex], Meta(min_length=1, max_length=10_000)]


UPLOAD_PART_BYTES = 64 * 1024**2  # the part size clients choose for direct uploads


def declare_file(
    path: Path, part_size: int = UPLOAD_PART_BYTES, *, kind: type = DirectUploadStart, **extra
) -> DirectUploadStart:
    """The declaration (``kind``: DirectUploadStart or MediaUploadStart, with ``extra``
    fields) of the file at ``path`` sent in parts of ``part_size``: its size, its sha256 and
    every part's, read in one pass."""
    whole = hashlib.sha256()
    parts: list[str] = []
    size = 0
    with open(path, "rb") as f:
        while True:
            part = hashlib.sha256()
            left = part_size
            while left and (block := f.read(min(left, 1024 * 1024))):
                part.update(block)
                whole.update(block)
                left -= len(block)
            got = part_size - left
            if got == 0 and parts:
                break
            parts.append(part.hexdigest())
            size += got
            if left:
                break
    return kind(size=size, sha256=whole.hexdigest(), part_size=part_size, parts_sha256=parts,
                **extra)  # fmt: skip


def part_checksum(sha256_hex: str) -> str:
    """The value of ``PART_CHECKSUM_HEADER`` for a part of this sha256 (base64, as S3 has it)."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


class UploadPart(WireStruct):
    """One part of a direct upload: ``done``, or to be sent with ``PUT url`` (a presigned URL
    of the store; the body is bytes ``(number-1)*part_size`` on, ``size`` of them, with the
    ``x-amz-checksum-sha256`` header: base64 of the part's sha256)."""

    number: int
    size: int
    url: str = ""
    done: bool = False


class DirectUpload(WireStruct):
    """The board's answer to ``DirectUploadStart``: the parts, those that arrived marked done.
    The URLs expire at ``expires_at``; asking again gives fresh ones."""

    upload_id: str
    part_size: int
    parts: list[UploadPart]
    expires_at: datetime


class MediaUploadStart(DirectUploadStart, forbid_unknown_fields=True):
    """``POST /api/v1/media/uploads``: a submitter is about to upload this file."""

    filename: Annotated[str, Meta(max_length=1000)] = ""


class MediaUpload(WireStruct):
    """The answer to ``MediaUploadStart``. ``media`` set: the board has these bytes from this
    submitter already, nothing to send. Else ``protocol`` says how: ``board``, the raw body to
    ``POST /api/v1/media``; ``s3-multipart``, the parts of ``upload`` to the store, then
    ``POST finish_url`` (the board verifies and probes the file and answers its MediaView)."""

    protocol: Literal["board", "s3-multipart"]
    media: MediaView | None = None
    upload: DirectUpload | None = None
    finish_url: str = ""


class UploadStatus(WireStruct):
    """Answer to an output upload (``PUT``) or its status (``GET``): resume from ``received``."""

    received: int
    size: int | None = None
    complete: bool = False


class FarmhandView(WireStruct):
    """A farmhand as admins see it. ``token`` (its token's name) is who it is; ``name`` is what
    it calls itself, for display."""

    name: str
    state: str
    online: bool
    reason: str = ""
    paused_by_owner: bool = False
    owner_reason: str = ""
    last_seen_at: datetime | None = None
    capabilities: Capabilities | None = None
    current_jobs: list[str] = []
    consecutive_failures: int = 0
    jobs_done: int = 0
    token: str = ""


class FarmhandAction(WireStruct):
    reason: ShortText = ""


class Limits(WireStruct):
    """A submitter's limits; ``None`` means no limit."""

    max_width: Annotated[int, Meta(ge=64, le=7680)] | None = None
    max_height: Annotated[int, Meta(ge=64, le=4320)] | None = None
    max_fps: Annotated[float, Meta(ge=1, le=120)] | None = None
    max_clips: Annotated[int, Meta(ge=1, le=1000)] | None = None
    forced_watermark: Annotated[str, Meta(max_length=64)] | None = (
        None  # media id laid over every job
    )
    monthly_render_seconds: Annotated[float, Meta(ge=0, le=1e9)] | None = None
    storage_quota_bytes: Annotated[int, Meta(ge=0, le=2**62)] | None = None


class SubmitterView(WireStruct):
    name: str
    limits: Limits
    render_seconds_this_month: float = 0.0
    storage_bytes: int = 0


def encode(obj: object) -> bytes:
    """JSON-encode a wire struct."""
    return msgspec.json.encode(obj)


def decode(raw: bytes | str, type_: type):
    """Decode and validate JSON into a wire struct (raises msgspec.ValidationError)."""
    return msgspec.json.decode(raw, type=type_)
