"""The board's schema (SQLAlchemy Core tables).

Changed only through alembic migrations (``migrations/versions``); ``tests/board/test_migrations``
checks that the two agree. Times are UTC epoch seconds (float): the same on SQLite and PostgreSQL,
cheap to compare in the claim query.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

submitters = Table(
    "submitters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("max_width", Integer),
    Column("max_height", Integer),
    Column("max_fps", Float),
    Column("max_clips", Integer),
    Column("forced_watermark", String(64)),  # media id
    Column("monthly_render_seconds", Float),
    Column("storage_quota_bytes", BigInteger),
    Column("created_at", Float, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("submitter_id", Integer, ForeignKey("submitters.id")),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

# A dashboard sign-in (board.domain.sessions): the cookie holds a random session id, stored here
# as its sha256; signing out deletes the row, a revoked token's rows stop counting at once.
sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("token_id", Integer, ForeignKey("tokens.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_sessions_token", "token_id"),
    Index("ix_sessions_expires", "expires_at"),
)

# A farmhand is its token (docs/architecture.md, "Farmhands"): one row per farmhand token, holding
# everything the board decides about it (state, failures, the jobs it failed, its slots through
# the jobs it holds). ``name`` is what the farmhand calls itself, for display only; rows without
# a token are farmhands from before identity was the token, kept for the history that names them.
farmhands = Table(
    "farmhands",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("token_id", Integer, ForeignKey("tokens.id"), unique=True),
    Column("capabilities", JSON),
    # admin state: active | paused | draining | quarantined | revoked
    Column("state", String(16), nullable=False, default="active"),
    Column("state_reason", Text, nullable=False, default=""),
    # what the farmhand itself reports: its owner is using the PC
    Column("owner_paused", Boolean, nullable=False, default=False),
    Column("owner_reason", Text, nullable=False, default=""),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("jobs_done", Integer, nullable=False, default=0),
    Column("first_seen_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("submitter_id", Integer, ForeignKey("submitters.id"), nullable=False),
    Column("title", Text, nullable=False, default=""),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("compilation", JSON, nullable=False),
    Column("requirements", JSON, nullable=False),
    # requirements, flattened for the claim query
    Column("req_codec", String(8), nullable=False),
    Column("req_encoder", String(8), nullable=False),
    Column("req_gpu_memory_mb", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("not_before", Float, nullable=False, default=0.0),
    Column("queued_at", Float, nullable=False),  # when it last entered `queued` (GPU grace)
    Column("lease_token", String(64)),
    Column("lease_expires_at", Float),
    Column("farmhand_id", Integer, ForeignKey("farmhands.id")),
    Column("failed_by", JSON, nullable=False, default=list),  # farmhand ids that failed it
    Column("stage", String(100)),
    Column("progress", Float, nullable=False, default=0.0),
    Column("progress_at", Float),  # last time progress advanced (stall detection)
    Column("eta_s", Float),
    Column("encoder", String(64)),
    Column("error", Text),
    Column("idempotency_key", String(200)),
    Column("body_hash", String(64)),
    Column("estimate_s", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("claimed_at", Float),
    Column("finished_at", Float),
    # a split job's pieces (docs/architecture.md, "Split render"): the job they belong to, what
    # they are (render: a whole job; part, audio, join), what they render, the one encoder a
    # video part must be encoded with; ``split`` is the submitter's choice (auto or never)
    Column("parent_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE")),
    Column("kind", String(8), nullable=False, default="render", server_default="render"),
    Column("piece", JSON),
    Column("req_encoder_name", String(64)),
    Column("split", String(8), nullable=False, default="auto", server_default="auto"),
    UniqueConstraint("submitter_id", "idempotency_key", name="uq_jobs_submitter_idempotency"),
    Index("ix_jobs_parent", "parent_id"),
    Index("ix_jobs_lease", "state", "lease_expires_at"),
    Index("ix_jobs_submitter_state", "submitter_id", "state"),
    Index("ix_jobs_farmhand", "farmhand_id", "state"),  # a claim counts what its farmhand holds
)
# The claim query's ORDER BY exactly (priority DESC, then oldest): the best job is the first index
# entry, with no sort of the whole queue per claim.
Index("ix_jobs_claim_order", jobs.c.state, jobs.c.priority.desc(), jobs.c.created_at, jobs.c.id)
# The dashboard's default page (newest first) and queue-wait figures.
Index("ix_jobs_created", jobs.c.created_at)

# A job's required tags, one row each, so the claim query can test "tags ⊆ the farmhand's tags"
# in SQL (filtering after the LIMIT would starve a farmhand behind jobs it cannot take).
job_tags = Table(
    "job_tags",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(64), primary_key=True),
)

job_media = Table(
    "job_media",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("media_id", String(32), ForeignKey("media.id"), primary_key=True),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("farmhand", String(100)),
    Column("message", Text, nullable=False, default=""),
    Index("ix_job_events_job", "job_id", "id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("farmhand_id", Integer, ForeignKey("farmhands.id")),
    Column("lease_token", String(64), nullable=False, unique=True),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    # succeeded | failed | lost | stalled | released | cancelled
    Column("outcome", String(16)),
    Column("encoder", String(64)),
    Column("error", Text),
    Column("stderr_tail", Text),
    Index("ix_attempts_job", "job_id", "number"),
)

media = Table(
    "media",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("submitter_id", Integer, ForeignKey("submitters.id"), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("filename", String(255), nullable=False),
    Column("storage_key", String(255), nullable=False),
    Column("probe", JSON, nullable=False),
    Column("duration_s", Float),
    Column("created_at", Float, nullable=False),
    Index("ix_media_owner_sha", "submitter_id", "sha256"),
)

outputs = Table(
    "outputs",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("storage_key", String(255), nullable=False),
    Column("thumbnail_key", String(255)),
    Column("created_at", Float, nullable=False),
)

usage = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("submitter_id", Integer, ForeignKey("submitters.id"), nullable=False),
    Column("job_id", String(32), nullable=False, unique=True),
    Column("month", String(7), nullable=False),  # "2026-11"
    Column("render_seconds", Float, nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_usage_submitter_month", "submitter_id", "month"),
)
