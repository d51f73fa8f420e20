"""The farmhand's side of the wire contract: one typed method per board route.

Every call goes through ``wire.client``: connection trouble, 5xx and 429 are retried with
backoff (tenacity) until the call's deadline, then raise ``BoardUnreachable`` and the caller
decides (a heartbeat just tries again next interval; an upload keeps trying while the lease may
still be alive). The board saying "this lease is gone" (409) is ``LeaseLost`` and never retried.

The rendered output and its thumbnail go where the job's context says (``output_url``,
``thumbnail_url``): a path on the board or an absolute URL, possibly on another host (object
storage); the farmhand's token and lease are sent only to the board itself. When the board keeps
outputs in object storage, ``output_url`` is its multipart route: the farmhand declares the file
and its parts there and PUTs the parts to the presigned URLs it answers, straight to the store;
after a cut it asks again and sends the parts the store does not hold yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec

from wire import (
    LEASE_HEADER,
    PART_CHECKSUM_HEADER,
    UPLOAD_PART_BYTES,
    UPLOAD_SHA256_HEADER,
    UPLOAD_SIZE_HEADER,
    Capabilities,
    Claim,
    ClaimRequest,
    Complete,
    DirectUpload,
    Fail,
    FarmhandStatus,
    FarmhandStatusReply,
    Heartbeat,
    HeartbeatReply,
    JobContext,
    Release,
    UploadStatus,
    declare_file,
    part_checksum,
    routes,
)
from wire.client import TryAgain, call_async, checked, retried_async, unreachable
from wire.errors import BoardError, BoardUnreachable, LeaseLost

__all__ = ["BoardClient", "BoardError", "BoardUnreachable", "LeaseLost", "sha256_of"]

log = logging.getLogger("farmhand.client")
UPLOAD_CHUNK = 1024 * 1024
# On a farmhand's call about a job it holds, 409 means the lease is gone (docs/architecture.md, "Job lifecycle").
LEASE_ERRORS = {409: LeaseLost}
# Keep an idle connection between heartbeats (every 10 s) instead of httpx's 5 s default, but
# let it go before the board does (``board serve`` keeps one 65 s): no new TCP and TLS handshake
# per call, on either side.
CONNECTION_LIMITS = httpx.Limits(keepalive_expiry=60.0)


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


class BoardClient:
    """An ``httpx.AsyncClient`` bound to one board and one farmhand token."""

    def __init__(
        self,
        board_url: str,
        token: str,
        *,
        name: str,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        part_size: int = UPLOAD_PART_BYTES,
    ) -> None:
        self.name = name
        self.token = token
        self.part_size = part_size  # of an output sent straight to object storage
        self.http = httpx.AsyncClient(
            base_url=board_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"clipfarm-farmhand/{name}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=CONNECTION_LIMITS,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(
        self,
        method: str,
        url: str,
        what: str,
        *,
        deadline_s: float,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request about the farm or a held job, retried until ``deadline_s``."""
        if timeout_s is not None:
            kwargs["timeout"] = httpx.Timeout(timeout_s, connect=10.0)
        return await call_async(
            lambda: self._send(method, url, **kwargs),
            what,
            deadline_s=deadline_s,
            classes=LEASE_ERRORS,
        )

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request to ``url``: a path on the board, or an absolute URL that gets the
        farmhand's token only when it points at the board itself."""
        request = self.http.build_request(method, url, **kwargs)
        if not self._on_board(request.url):
            del request.headers["Authorization"]
            request.headers.pop(LEASE_HEADER, None)
        return await self.http.send(request)

    def _on_board(self, url: httpx.URL) -> bool:
        board = self.http.base_url
        return (url.scheme, url.host, url.port) == (board.scheme, board.host, board.port)

    async def _post_json(self, url: str, what: str, body: Any, *, deadline_s: float):
        return await self._call(
            "POST",
            url,
            what,
            deadline_s=deadline_s,
            content=msgspec.json.encode(body),
            headers={"Content-Type": "application/json"},
        )

    # ------------------------------------------------------------ farm

    async def claim(
        self, capabilities: Capabilities, *, wait_s: float, running: list[str]
    ) -> Claim | None:
        """Long-poll for a job (up to ``wait_s``); None when the board had none for us."""
        body = ClaimRequest(
            farmhand=self.name, capabilities=capabilities, wait_s=wait_s, running=running
        )
        response = await self._call(
            "POST",
            routes.CLAIM,
            "claim",
            deadline_s=wait_s + 30,
            timeout_s=wait_s + 15,
            content=msgspec.json.encode(body),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code == 204:
            return None
        return msgspec.json.decode(response.content, type=Claim)

    async def status(
        self,
        *,
        paused: bool,
        reason: str,
        capabilities: Capabilities | None,
        deadline_s: float = 10.0,
    ) -> FarmhandStatusReply:
        """Tell the board whether we are paused (and what we can do); its view of us back."""
        body = FarmhandStatus(
            farmhand=self.name, paused=paused, reason=reason, capabilities=capabilities
        )
        response = await self._post_json(
            routes.FARMHAND_STATUS, "status", body, deadline_s=deadline_s
        )
        return msgspec.json.decode(response.content, type=FarmhandStatusReply)

    # ------------------------------------------------------------ the held job

    async def context(self, job_id: str, lease_token: str) -> JobContext:
        """Everything needed to render the job, and where its output goes."""
        response = await self._call(
            "GET",
            routes.path(routes.JOB_CONTEXT, job_id=job_id),
            f"context of {job_id}",
            deadline_s=60,
            headers={LEASE_HEADER: lease_token},
        )
        return msgspec.json.decode(response.content, type=JobContext)

    async def heartbeat(self, job_id: str, beat: Heartbeat, *, deadline_s: float) -> HeartbeatReply:
        """Extend the lease and report progress; the answer may say ``cancel``."""
        url = routes.path(routes.JOB_HEARTBEAT, job_id=job_id)
        response = await self._post_json(url, f"heartbeat {job_id}", beat, deadline_s=deadline_s)
        return msgspec.json.decode(response.content, type=HeartbeatReply)

    async def complete(self, job_id: str, done: Complete, *, deadline_s: float) -> None:
        """Hand the job in (after its output was uploaded)."""
        url = routes.path(routes.JOB_COMPLETE, job_id=job_id)
        await self._post_json(url, f"complete {job_id}", done, deadline_s=deadline_s)

    async def fail(self, job_id: str, failure: Fail, *, deadline_s: float) -> None:
        """Report the job failed, retryable or not."""
        url = routes.path(routes.JOB_FAIL, job_id=job_id)
        await self._post_json(url, f"fail {job_id}", failure, deadline_s=deadline_s)

    async def release(self, job_id: str, rel: Release, *, deadline_s: float = 10.0) -> None:
        """Give the job back (shutting down): the board requeues it at once."""
        url = routes.path(routes.JOB_RELEASE, job_id=job_id)
        await self._post_json(url, f"release {job_id}", rel, deadline_s=deadline_s)

    # ------------------------------------------------------------ upload

    async def upload_output(
        self,
        job_id: str,
        lease_token: str,
        path: Path,
        *,
        sha256: str,
        deadline_s: float,
        url: str | None = None,
    ) -> UploadStatus:
        """Upload ``path`` resumably to ``url`` (the context's ``output_url``; None: the board's
        own upload route): send it whole; after a cut, ask how much arrived and send the rest.
        The board's multipart route: send the parts straight to object storage. Retried until
        ``deadline_s``."""
        url = url or routes.path(routes.JOB_UPLOAD, job_id=job_id)
        if url == routes.path(routes.JOB_UPLOAD_MULTIPART, job_id=job_id):
            return await self._upload_parts(job_id, lease_token, path, url, deadline_s=deadline_s)
        size = path.stat().st_size
        declared = {
            LEASE_HEADER: lease_token,
            UPLOAD_SHA256_HEADER: sha256,
            UPLOAD_SIZE_HEADER: str(size),
        }
        what = f"upload of {job_id}"
        tries = 0

        async def once() -> UploadStatus:
            nonlocal tries
            tries += 1  # a lease's first try has nothing to resume: no need to ask
            return await self._upload_once(url, what, path, declared, size, resume=tries > 1)

        return await retried_async(once, deadline_s=deadline_s)

    async def _upload_once(
        self, url: str, what: str, path: Path, declared: dict[str, str], size: int, *, resume: bool
    ) -> UploadStatus:
        offset = 0
        if resume:
            answer = await self._call(
                "GET", url, f"{what} (status)", deadline_s=30, headers=declared
            )
            status = msgspec.json.decode(answer.content, type=UploadStatus)
            if status.complete and status.size == size:
                return status
            offset = status.received if status.size == size else 0
        headers = {
            **declared,
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {offset}-{size - 1}/{size}",
            "Content-Length": str(size - offset),
        }
        try:
            response = await self._send(
                "PUT",
                url,
                content=_read_from(path, offset),
                headers=headers,
                timeout=httpx.Timeout(120.0, connect=10.0),
            )
        except httpx.TransportError as exc:
            raise unreachable(f"{what} (cut after byte {offset})", exc) from exc
        if response.status_code == 416:  # the board's idea of what arrived moved: ask again
            raise TryAgain(f"{what}: HTTP 416 at byte {offset}")
        checked(response, what, classes=LEASE_ERRORS)
        status = msgspec.json.decode(response.content, type=UploadStatus)
        if not status.complete:
            raise TryAgain(f"{what}: the board has {status.received} of {size} bytes")
        return status

    async def _upload_parts(
        self, job_id: str, lease_token: str, path: Path, url: str, *, deadline_s: float
    ) -> UploadStatus:
        """Declare the file to the board's multipart route and PUT each part it answers to its
        presigned URL; after a cut (or an expired URL) ask again, which lists what the store
        holds and signs fresh URLs for the rest."""
        declared = await asyncio.to_thread(declare_file, path, self.part_size)
        what = f"upload of {job_id}"
        body = msgspec.json.encode(declared)
        headers = {LEASE_HEADER: lease_token, "Content-Type": "application/json"}

        async def once() -> UploadStatus:
            answer = await self._call(
                "POST", url, f"{what} (parts)", deadline_s=60, content=body, headers=headers
            )
            plan = msgspec.json.decode(answer.content, type=DirectUpload)
            for part in plan.parts:
                if not part.done:
                    sha = declared.parts_sha256[part.number - 1]
                    await self._put_part(path, plan.part_size, part.number, part.size, sha,
                                         part.url, what)  # fmt: skip
            return UploadStatus(received=declared.size, size=declared.size, complete=True)

        return await retried_async(once, deadline_s=deadline_s)

    async def _put_part(
        self, path: Path, part_size: int, number: int, size: int, sha: str, url: str, what: str
    ) -> None:
        offset = (number - 1) * part_size
        headers = {PART_CHECKSUM_HEADER: part_checksum(sha), "Content-Length": str(size),
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        try:
            response = await self._send(
                "PUT", url, content=_read_from(path, offset, size), headers=headers,
                timeout=httpx.Timeout(120.0, connect=10.0),
            )  # fmt: skip
        except httpx.TransportError as exc:
            raise unreachable(f"{what} (part {number}, cut)", exc) from exc
        if response.status_code >= 300:
            # an expired URL (403), a damaged transfer (400), the store busy (5xx): ask the
            # board again, which signs fresh URLs for the parts the store does not hold
            raise TryAgain(f"{what}: the store answered part {number} with HTTP "
                           f"{response.status_code}")  # fmt: skip

    async def upload_thumbnail(
        self, job_id: str, lease_token: str, path: Path, *, url: str | None = None
    ) -> None:
        """PUT the job's thumbnail to ``url`` (the context's ``thumbnail_url``; None: the
        board's own route)."""
        await self._call(
            "PUT",
            url or routes.path(routes.JOB_UPLOAD_THUMBNAIL, job_id=job_id),
            f"thumbnail of {job_id}",
            deadline_s=60,
            content=path.read_bytes(),
            headers={LEASE_HEADER: lease_token, "Content-Type": "image/jpeg"},
        )


async def _read_from(path: Path, offset: int, length: int | None = None) -> AsyncIterator[bytes]:
    """The file's bytes from ``offset`` on (``length`` of them; None: to its end)."""
    left = length
    with open(path, "rb") as f:
        f.seek(offset)
        while left is None or left > 0:
            block = f.read(UPLOAD_CHUNK if left is None else min(UPLOAD_CHUNK, left))
            if not block:
                break
            if left is not None:
                left -= len(block)
            yield block
