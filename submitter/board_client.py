"""The submitter's side of the board's public HTTP API: upload media, submit jobs in batches,
read jobs, download outputs. Calls go through ``wire.client``: connection trouble and 5xx answers
are retried (a batch submit is safe to repeat: every job carries an idempotency key); the board
refusing something is a :class:`BoardError` with the board's own message and a hint for the
statuses people meet.

An upload begins by declaring the file (``POST /api/v1/media/uploads``): the board may have these
bytes already (nothing is sent), take them itself (``POST /api/v1/media``), or, when it keeps
files in object storage, answer presigned URLs: the parts go straight to the store, then the
board verifies and probes the file. A download that the board answers with a redirect (to the
store) follows it; the submitter's token is never sent to another host.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec

from wire import (
    PART_CHECKSUM_HEADER,
    UPLOAD_PART_BYTES,
    BatchResult,
    JobPage,
    JobView,
    MediaUpload,
    MediaUploadStart,
    MediaView,
    declare_file,
    part_checksum,
    routes,
)
from wire.client import TryAgain, call, checked, retried, unreachable
from wire.errors import BoardError, BoardUnreachable

__all__ = ["BoardClient", "BoardError", "BoardUnreachable"]

CHUNK = 1024 * 1024
DEADLINE_S = 20.0  # how long a call keeps trying while the board is unreachable or unwell
ProgressFn = Callable[[int], None]

HINTS = {
    401: " — use a submitter token: `board token create --role submitter --name NAME` on the "
    "board host, then pass it with --token or CLIPFARM_TOKEN",
    403: " — submitting and uploading need a submitter token (not an admin or farmhand one)",
}


class BoardClient:
    """One board, one submitter token."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        part_size: int = UPLOAD_PART_BYTES,
    ) -> None:
        self.url = url.rstrip("/")
        self.part_size = part_size  # of a file sent straight to object storage
        # redirects are followed (a download from object storage); httpx drops the
        # Authorization header when a redirect leads to another host
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            transport=transport,
            follow_redirects=True,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> BoardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on connection trouble and 5xx; BoardError otherwise."""
        return call(
            lambda: self.http.request(method, url, **kwargs),
            what,
            deadline_s=DEADLINE_S,
            hints=HINTS,
        )

    # ------------------------------------------------------------ calls

    def upload_media(
        self, path: Path, *, size: int, on_bytes: ProgressFn | None = None
    ) -> tuple[MediaView, bool]:
        """Upload a local file; returns the media and whether it is new (False: the board had
        these bytes from this submitter already)."""
        declared = declare_file(path, self.part_size, kind=MediaUploadStart, filename=path.name)
        answer = self._call("POST", routes.MEDIA_UPLOADS, f"upload {path.name}",
                            content=msgspec.json.encode(declared),
                            headers={"Content-Type": "application/json"})  # fmt: skip
        plan = msgspec.json.decode(answer.content, type=MediaUpload)
        if plan.media is not None:
            if on_bytes:
                on_bytes(size)
            return plan.media, False
        if plan.protocol == "s3-multipart":
            return self._upload_parts(path, declared, on_bytes)

        def body() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    if on_bytes:
                        on_bytes(len(chunk))
                    yield chunk

        response = call(
            lambda: self.http.post(  # a fresh body stream for each try
                routes.MEDIA,
                params={"filename": path.name},
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                content=body(),
            ),
            f"upload {path.name}",
            deadline_s=DEADLINE_S,
            hints=HINTS,
        )
        return msgspec.json.decode(response.content, type=MediaView), response.status_code == 201

    def _upload_parts(
        self, path: Path, declared: MediaUploadStart, on_bytes: ProgressFn | None
    ) -> tuple[MediaView, bool]:
        """Send the parts the board asks for straight to the store (asking again after a cut:
        it lists what arrived), then have the board check and probe the file."""
        what = f"upload {path.name}"
        body = msgspec.json.encode(declared)
        json_type = {"Content-Type": "application/json"}

        def once() -> str:
            answer = self._call("POST", routes.MEDIA_UPLOADS, what, content=body, headers=json_type)
            plan = msgspec.json.decode(answer.content, type=MediaUpload)
            assert plan.upload is not None
            for part in plan.upload.parts:
                if part.done:
                    continue
                offset = (part.number - 1) * plan.upload.part_size
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read(part.size)
                sha = declared.parts_sha256[part.number - 1]
                try:
                    sent = httpx.put(part.url, content=data, timeout=self.http.timeout,
                                     headers={PART_CHECKSUM_HEADER: part_checksum(sha)})  # fmt: skip
                except httpx.TransportError as exc:
                    raise unreachable(f"{what} (part {part.number})", exc) from exc
                if sent.status_code >= 300:  # an expired URL, the store busy: ask again
                    raise TryAgain(f"{what}: the store answered HTTP {sent.status_code}")
                if on_bytes:
                    on_bytes(part.size)
            return plan.finish_url

        finish = retried(once, deadline_s=DEADLINE_S)
        response = self._call("POST", finish, f"{what} (finish)")
        return msgspec.json.decode(response.content, type=MediaView), response.status_code == 201

    def submit_batch(self, jobs: list[dict[str, Any]]) -> BatchResult:
        """``POST /api/v1/jobs/batch``: each job answered on its own."""
        response = self._call("POST", routes.JOBS_BATCH, "submit", json={"jobs": jobs})
        return msgspec.json.decode(response.content, type=BatchResult)

    def job(self, job_id: str) -> JobView:
        """The job as the board sees it now."""
        url = routes.path(routes.JOB, job_id=job_id)
        response = self._call("GET", url, f"read job {job_id}")
        return msgspec.json.decode(response.content, type=JobView)

    def jobs_total(self, state: str | None = None) -> int:
        """How many jobs this token can see (optionally in one state)."""
        params = {"limit": 1, **({"state": state} if state else {})}
        response = self._call("GET", routes.JOBS, "list jobs", params=params)
        return msgspec.json.decode(response.content, type=JobPage).total

    def download_output(self, job: JobView, dest: Path, on_bytes: ProgressFn | None = None):
        """Save a succeeded job's video to ``dest``, checked against the board's size and
        sha256; written to ``dest.part`` first so a broken download never looks finished. A
        download cut short starts again."""
        assert job.output is not None
        part = dest.with_name(dest.name + ".part")
        sha256 = retried(lambda: self._download_once(job, part, on_bytes), deadline_s=DEADLINE_S)
        size = part.stat().st_size
        if size != job.output.size or sha256 != job.output.sha256:
            part.unlink(missing_ok=True)
            raise BoardError(
                f"download {job.id}: got {size} bytes that do not match the board's "
                f"{job.output.size} bytes / sha256 {job.output.sha256[:12]}…"
            )
        part.replace(dest)
        return dest

    def _download_once(self, job: JobView, part: Path, on_bytes: ProgressFn | None) -> str:
        """One try of a download into ``part``; returns the sha256 of what arrived."""
        what = f"download {job.id}"
        digest = hashlib.sha256()
        try:
            with self.http.stream("GET", routes.path(routes.JOB_OUTPUT, job_id=job.id)) as answer:
                if answer.status_code != 200:
                    answer.read()
                    checked(answer, what, hints=HINTS)
                with part.open("wb") as f:
                    for chunk in answer.iter_bytes(CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
        except httpx.TransportError as exc:
            raise unreachable(what, exc) from exc
        return digest.hexdigest()
