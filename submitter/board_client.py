"""The submitter's side of the board's public HTTP API: upload media, submit jobs in batches,
read jobs, download outputs. Connection trouble and 5xx answers are retried (a batch submit is
safe to repeat: every job carries an idempotency key); the board refusing something is a
:class:`BoardError` with the board's own message and a hint for the statuses people meet.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec

from wire import API, BatchResult, JobPage, JobView, MediaView, error_detail

CHUNK = 1024 * 1024
RETRY_WAITS_S = (1.0, 2.0, 4.0, 8.0)
ProgressFn = Callable[[int], None]


class BoardError(Exception):
    """The board refused a call; ``status`` is its HTTP status (0: no answer at all)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class BoardUnreachable(BoardError):
    """No answer from the board (or only 5xx) after a few tries."""


def _hint(status: int) -> str:
    if status == 401:
        return (
            " — use a submitter token: `board token create --role submitter --name NAME` on the "
            "board host, then pass it with --token or CLIPFARM_TOKEN"
        )
    if status == 403:
        return " — submitting and uploading need a submitter token (not an admin or farmhand one)"
    return ""


def _detail(response: httpx.Response) -> str:
    return error_detail(response.content, response.reason_phrase)


class BoardClient:
    """One board, one submitter token."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> BoardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------ calls

    def upload_media(
        self, path: Path, *, size: int, on_bytes: ProgressFn | None = None
    ) -> tuple[MediaView, bool]:
        """Upload a local file; returns the media and whether it is new (False: the board had
        these bytes from this submitter already)."""

        def body() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    if on_bytes:
                        on_bytes(len(chunk))
                    yield chunk

        response = self._call(
            "POST",
            f"{API}/media",
            f"upload {path.name}",
            params={"filename": path.name},
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            content=body,
        )
        return msgspec.json.decode(response.content, type=MediaView), response.status_code == 201

    def submit_batch(self, jobs: list[dict[str, Any]]) -> BatchResult:
        """``POST /api/v1/jobs/batch``: each job answered on its own."""
        response = self._call("POST", f"{API}/jobs/batch", "submit", json={"jobs": jobs})
        return msgspec.json.decode(response.content, type=BatchResult)

    def job(self, job_id: str) -> JobView:
        response = self._call("GET", f"{API}/jobs/{job_id}", f"read job {job_id}")
        return msgspec.json.decode(response.content, type=JobView)

    def jobs_total(self, state: str | None = None) -> int:
        """How many jobs this token can see (optionally in one state)."""
        params = {"limit": 1, **({"state": state} if state else {})}
        response = self._call("GET", f"{API}/jobs", "list jobs", params=params)
        return msgspec.json.decode(response.content, type=JobPage).total

    def download_output(self, job: JobView, dest: Path, on_bytes: ProgressFn | None = None):
        """Save a succeeded job's video to ``dest``, checked against the board's size and
        sha256; written to ``dest.part`` first so a broken download never looks finished."""
        assert job.output is not None
        part = dest.with_name(dest.name + ".part")
        for wait in (*RETRY_WAITS_S, None):
            digest = hashlib.sha256()
            try:
                with self.http.stream("GET", f"{API}/jobs/{job.id}/output") as response:
                    if response.status_code != 200:
                        response.read()
                        raise BoardError(
                            f"download {job.id}: {_detail(response)}", response.status_code
                        )
                    with part.open("wb") as f:
                        for chunk in response.iter_bytes(CHUNK):
                            f.write(chunk)
                            digest.update(chunk)
                            if on_bytes:
                                on_bytes(len(chunk))
                break
            except httpx.TransportError as exc:
                if wait is None:
                    raise BoardUnreachable(f"download {job.id}: {exc}") from None
                time.sleep(wait)
        size = part.stat().st_size
        if size != job.output.size or digest.hexdigest() != job.output.sha256:
            part.unlink(missing_ok=True)
            raise BoardError(
                f"download {job.id}: got {size} bytes that do not match the board's "
                f"{job.output.size} bytes / sha256 {job.output.sha256[:12]}…"
            )
        part.replace(dest)
        return dest

    # ------------------------------------------------------------ plumbing

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on connection trouble and 5xx; BoardError otherwise."""
        stream = kwargs.pop("content") if callable(kwargs.get("content")) else None
        for wait in (*RETRY_WAITS_S, None):
            if stream is not None:  # a streamed body: a fresh stream for each try
                kwargs["content"] = stream()
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if wait is None:
                    raise BoardUnreachable(
                        f"{what}: cannot reach the board at {self.url} ({exc or type(exc).__name__})"
                    ) from None
            else:
                if response.status_code < 400:
                    return response
                if response.status_code < 500 or wait is None:
                    status = response.status_code
                    error = BoardUnreachable if status >= 500 else BoardError
                    raise error(
                        f"{what}: HTTP {status}: {_detail(response)}{_hint(status)}", status
                    )
            time.sleep(wait)
        raise AssertionError("the retry loop always returns or raises")
