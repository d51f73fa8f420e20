"""The steps of a bulk submit after the manifest checked out: hash the local files, upload each
distinct one once, give every compilation a stable idempotency key, submit in batches.

The key is a hash of the compilation as the manifest normalises it (times in seconds, defaults
dropped) with every local file stood in for by the sha256 of its content. The same manifest run
again — or moved to another folder — makes the same keys, so the board answers "existing" instead
of creating new jobs; changing a clip, a trim or a setting makes a new compilation, and a new job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from submitter.board_client import BoardClient, BoardError
from submitter.manifest import ManifestItem, sources_of
from submitter.progress import ProgressBar
from timeline.spec import parse_compilation
from wire import JobView

KEY_VERSION = "clipfarm-submit/1"  # part of every hashed key: change it only to start afresh
BATCH_MAX = 500  # the batch route's limit (wire.SubmitBatch)


@dataclass
class Entry:
    """One compilation of the manifest on its way to becoming a job."""

    item: ManifestItem
    key: str = ""
    body: dict[str, Any] = field(default_factory=dict)
    status: int | None = None  # 201 new, 200 existing, 4xx rejected
    error: str | None = None
    job: JobView | None = None
    same_as: Entry | None = None  # an identical compilation earlier in the manifest
    saved: Path | None = None  # the downloaded output

    @property
    def title(self) -> str:
        title = (
            self.item.compilation.get("title") if isinstance(self.item.compilation, dict) else ""
        )
        return title or self.item.label

    @property
    def state(self) -> str:
        if self.job is not None:
            return self.job.state
        return "rejected" if self.status and self.status >= 400 else "not submitted"


def sha256_files(paths: list[Path], bar: ProgressBar | None = None) -> dict[Path, str]:
    """The sha256 of each file (read once each)."""
    hashes: dict[Path, str] = {}
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
                if bar:
                    bar.advance(len(chunk))
        hashes[path] = digest.hexdigest()
    return hashes


def upload_files(
    board: BoardClient, hashes: dict[Path, str], bar: ProgressBar | None = None
) -> tuple[dict[str, str], int]:
    """Upload each distinct content once; returns (sha256 → media id, how many were new)."""
    media: dict[str, str] = {}
    new = 0
    for path, digest in hashes.items():
        if digest in media:
            continue
        view, created = board.upload_media(
            path, size=path.stat().st_size, on_bytes=bar.advance if bar else None
        )
        if view.sha256 != digest:
            raise BoardError(
                f"{path}: the board stored sha256 {view.sha256[:12]}… but the file has "
                f"{digest[:12]}… (did it change during the upload?)"
            )
        media[digest] = view.id
        new += created
    return media, new


def normalized(item: ManifestItem) -> dict[str, Any]:
    """The compilation as the timeline spec reads it, defaults dropped (JSON-able)."""
    return msgspec.to_builtins(parse_compilation(item.compilation))


def idempotency_key(item: ManifestItem, hashes: dict[Path, str], prefix: str = "") -> str:
    """The item's own key if it gave one; otherwise a stable hash of what it renders."""
    if item.submit.get("idempotency_key"):
        return item.submit["idempotency_key"]
    compilation = normalized(item)
    for _, _, source in sources_of(compilation):
        if "path" in source:
            source["sha256"] = hashes[Path(source.pop("path"))]
    canonical = json.dumps(
        [KEY_VERSION, compilation], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return f"{prefix}cf-{hashlib.sha256(canonical.encode()).hexdigest()[:40]}"


def submit_body(item: ManifestItem, key: str, hashes: dict[Path, str], media: dict[str, str]):
    """The ``POST /api/v1/jobs`` body: local files replaced by their board media ids."""
    compilation = normalized(item)
    for _, _, source in sources_of(compilation):
        if "path" in source:
            source["media"] = media[hashes[Path(source.pop("path"))]]
    extra = {k: v for k, v in item.submit.items() if k != "idempotency_key"}
    return {"compilation": compilation, "idempotency_key": key, **extra}


def submit_entries(
    board: BoardClient, entries: list[Entry], *, chunk: int, bar: ProgressBar | None = None
) -> None:
    """Submit through the batch route, ``chunk`` jobs per request; fills status/job/error. A
    request the board finds too large (413) is sent again in halves."""
    chunk = max(1, min(chunk, BATCH_MAX))
    for start in range(0, len(entries), chunk):
        _submit_part(board, entries[start : start + chunk], bar)


def _submit_part(board: BoardClient, part: list[Entry], bar: ProgressBar | None) -> None:
    try:
        result = board.submit_batch([e.body for e in part])
    except BoardError as exc:
        if exc.status != 413 or len(part) == 1:
            raise
        half = len(part) // 2
        _submit_part(board, part[:half], bar)
        _submit_part(board, part[half:], bar)
        return
    for answer in result.items:
        entry = part[answer.index]
        entry.status = answer.status
        entry.job = answer.job
        entry.error = answer.error
    if bar:
        bar.advance(len(part))
