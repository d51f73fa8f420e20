"""Board configuration: environment variables (``BOARD_*``), overridden by CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from timeline.split import MIN_PART_WORK_S


class ConfigError(ValueError):
    """A setting that cannot be used as given."""


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


@dataclass(frozen=True)
class S3Settings:
    """Where an S3-compatible store keeps media and outputs (``BOARD_STORAGE=s3``).

    ``endpoint`` is what the board calls; ``public_endpoint`` the address in the presigned URLs
    it hands out (farmhands and submitters reach the store there: the same unless the board
    reaches the store on an inside address). Credentials are the board's alone: given here, or
    found by boto3 the standard way (``AWS_ACCESS_KEY_ID``…, a profile, an instance role) when
    both are empty."""

    bucket: str
    endpoint: str | None = None
    public_endpoint: str | None = None
    region: str = "us-east-1"
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    url_expiry_s: float = 3600.0  # presigned URLs stay valid this long
    upload_ttl_s: float = 86400.0  # an unfinished media upload is aborted after this


@dataclass(frozen=True)
class BoardConfig:
    data_dir: Path
    database_url: str
    lease_s: float = 60.0
    heartbeat_s: float = 10.0
    stall_s: float = 300.0
    gpu_grace_s: float = 30.0
    retry_base_s: float = 5.0
    retry_max_s: float = 300.0
    reap_interval_s: float = 1.0
    janitor_interval_s: float = 60.0
    quarantine_after: int = 5
    url_clip_estimate_s: float = 30.0
    max_upload_bytes: int = 20 * 1024**3
    max_json_bytes: int = 4 * 1024**2
    db_pool_size: int = 10  # PostgreSQL connections per board process (and as many overflow)
    # uploads are probed in child processes: this many at once, each capped in memory and time
    probe_concurrency: int = 2
    probe_memory_mb: int = 1024  # address space, ffprobe's shared libraries included
    probe_timeout_s: float = 30.0
    # HTTP: a request head must arrive within header_timeout_s of the connection (or of its
    # first byte on a kept-alive one); an idle connection closes after keep_alive_s; past
    # max_connections open connections and requests, new requests get 503
    header_timeout_s: float = 10.0
    keep_alive_s: float = 65.0
    max_connections: int = 4096
    max_streams_per_token: int = 16  # open event streams (jobs' and the dashboard's) per token
    output_retention_days: float | None = None  # None: outputs are kept until deleted
    split_min_work_s: float = MIN_PART_WORK_S  # a part of a split render holds at least this
    secure_cookies: bool = False  # behind TLS (a proxy terminating https): cookies are Secure
    s3: S3Settings | None = None  # None: media and outputs are files under data_dir
    host: str = "127.0.0.1"
    port: int = 8000
    extra: dict = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def with_overrides(self, **kwargs) -> BoardConfig:
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r}: use 1 or 0")


def _optional_float(name: str) -> float | None:
    """A number, or None when unset, empty or ``off``."""
    if os.environ.get(name, "").strip().lower() in ("", "off", "none"):
        return None
    value = _float(name, 0.0)
    if value <= 0:
        raise ConfigError(f"{name}={os.environ[name]!r} must be positive (or off)")
    return value


def default_data_dir() -> Path:
    return Path(os.environ.get("BOARD_DATA_DIR") or Path.cwd() / "data")


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def normalize_database_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, sqlite:///) and pick the async
    driver we ship."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///"):
        url = "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    if not (url.startswith("postgresql+asyncpg://") or url.startswith("sqlite+aiosqlite:///")):
        raise ConfigError(
            f"BOARD_DATABASE_URL {url!r}: use postgresql://… or sqlite:///path/to/board.db"
        )
    return url


def load_s3_settings() -> S3Settings | None:
    """``BOARD_STORAGE``: ``local`` (the default: files under the data directory) or ``s3``,
    with ``BOARD_S3_*`` saying which store."""
    backend = os.environ.get("BOARD_STORAGE", "").strip().lower() or "local"
    if backend == "local":
        return None
    if backend != "s3":
        raise ConfigError(f"BOARD_STORAGE={backend!r}: use local or s3")
    bucket = os.environ.get("BOARD_S3_BUCKET", "").strip()
    if not bucket:
        raise ConfigError("BOARD_STORAGE=s3 needs BOARD_S3_BUCKET (the bucket's name)")
    access = os.environ.get("BOARD_S3_ACCESS_KEY", "").strip()
    secret = os.environ.get("BOARD_S3_SECRET_KEY", "").strip()
    if bool(access) != bool(secret):
        raise ConfigError(
            "set both BOARD_S3_ACCESS_KEY and BOARD_S3_SECRET_KEY, or neither (then the "
            "standard AWS variables or profile are used)"
        )
    endpoint = os.environ.get("BOARD_S3_ENDPOINT", "").strip() or None
    for name, url in (("BOARD_S3_ENDPOINT", endpoint),
                      ("BOARD_S3_PUBLIC_ENDPOINT", os.environ.get("BOARD_S3_PUBLIC_ENDPOINT"))):  # fmt: skip
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name}={url!r}: give the store's URL, http(s)://host[:port]")
    expiry = _float("BOARD_S3_URL_EXPIRY_S", 3600.0)
    if not 1 <= expiry <= 7 * 86400:  # S3's own limit for a presigned URL is 7 days
        raise ConfigError(f"BOARD_S3_URL_EXPIRY_S={expiry:g}: use 1 to 604800 seconds")
    return S3Settings(
        bucket=bucket,
        endpoint=endpoint,
        public_endpoint=os.environ.get("BOARD_S3_PUBLIC_ENDPOINT", "").strip() or endpoint,
        region=os.environ.get("BOARD_S3_REGION", "").strip() or "us-east-1",
        access_key=access,
        secret_key=secret,
        url_expiry_s=expiry,
        upload_ttl_s=max(expiry, _float("BOARD_S3_UPLOAD_TTL_S", 86400.0)),
    )


def load_config(**overrides) -> BoardConfig:
    """Read ``BOARD_*`` from the environment; keyword arguments (CLI flags) win."""
    data_dir = Path(overrides.pop("data_dir", None) or default_data_dir()).resolve()
    db_url = overrides.pop("database_url", None) or os.environ.get("BOARD_DATABASE_URL")
    db_url = normalize_database_url(db_url) if db_url else sqlite_url(data_dir / "board.db")
    lease_s = _float("BOARD_LEASE_S", 60.0)
    heartbeat_s = _float("BOARD_HEARTBEAT_S", 10.0)
    if heartbeat_s <= 0 or lease_s <= heartbeat_s:
        raise ConfigError(
            f"BOARD_LEASE_S ({lease_s}) must be longer than BOARD_HEARTBEAT_S ({heartbeat_s})"
        )
    config = BoardConfig(
        data_dir=data_dir,
        database_url=db_url,
        lease_s=lease_s,
        heartbeat_s=heartbeat_s,
        stall_s=_float("BOARD_STALL_S", 300.0),
        gpu_grace_s=_float("BOARD_GPU_GRACE_S", 30.0),
        retry_base_s=_float("BOARD_RETRY_BASE_S", 5.0),
        retry_max_s=_float("BOARD_RETRY_MAX_S", 300.0),
        reap_interval_s=_float("BOARD_REAP_INTERVAL_S", 1.0),
        janitor_interval_s=_float("BOARD_JANITOR_INTERVAL_S", 60.0),
        quarantine_after=int(_float("BOARD_QUARANTINE_AFTER", 5)),
        url_clip_estimate_s=_float("BOARD_URL_CLIP_ESTIMATE_S", 30.0),
        db_pool_size=max(1, int(_float("BOARD_DB_POOL_SIZE", 10))),
        max_upload_bytes=int(_float("BOARD_MAX_UPLOAD_BYTES", 20 * 1024**3)),
        probe_concurrency=max(1, int(_float("BOARD_PROBE_CONCURRENCY", 2))),
        probe_memory_mb=max(512, int(_float("BOARD_PROBE_MEMORY_MB", 1024))),
        probe_timeout_s=max(1.0, _float("BOARD_PROBE_TIMEOUT_S", 30.0)),
        header_timeout_s=max(1.0, _float("BOARD_HEADER_TIMEOUT_S", 10.0)),
        keep_alive_s=max(1.0, _float("BOARD_KEEP_ALIVE_S", 65.0)),
        max_connections=max(8, int(_float("BOARD_MAX_CONNECTIONS", 4096))),
        max_streams_per_token=max(1, int(_float("BOARD_MAX_STREAMS_PER_TOKEN", 16))),
        output_retention_days=_optional_float("BOARD_OUTPUT_RETENTION_DAYS"),
        split_min_work_s=_float("BOARD_SPLIT_MIN_WORK_S", MIN_PART_WORK_S),
        secure_cookies=_flag("BOARD_SECURE_COOKIES"),
        s3=load_s3_settings(),
        host=os.environ.get("BOARD_HOST", "127.0.0.1"),
        port=int(_float("BOARD_PORT", 8000)),
    )
    return config.with_overrides(**overrides)


def ensure_data_dir(config: BoardConfig) -> Path:
    """Create the data directory (where the SQLite database, media and outputs live) if needed,
    readable by this user only (0700); one clear line when that is impossible."""
    try:
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data directory {config.data_dir} ({exc.strerror}); "
            "set BOARD_DATA_DIR or --data-dir to a folder this user may write"
        ) from None
    return config.data_dir
