"""The farmhand's side of the wire contract: one typed method per board route.

Every call goes through ``wire.client``: connection trouble, 5xx and 429 are retried with
backoff (tenacity) until the call's deadline, then raise ``BoardUnreachable`` and the caller
decides (a heartbeat just tries again next interval; an upload keeps trying while the lease may
still be alive). The board saying "this lease is gone" (409) is ``LeaseLost`` and never retried.

The rendered output and its thumbnail go where the job's context says (``output_url``,
``thumbnail_url``): a path on the board or an absolute URL, possibly on another host (object
storage); the farmhand's token is sent only to the board itself.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec

from wire import (
    LEASE_HEADER,
    UPLOAD_SHA256_HEADER,
    UPLOAD_SIZE_HEADER,
    Capabilities,
    Claim,
    ClaimRequest,
    Complete,
    Fail,
    FarmhandStatus,
    FarmhandStatusReply,
    Heartbeat,
    HeartbeatReply,
    JobContext,
    Release,
    UploadStatus,
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
    ) -> None:
        self.name = name
        self.token = token
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
        Retried until ``deadline_s``."""
        url = url or routes.path(routes.JOB_UPLOAD, job_id=job_id)
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


async def _read_from(path: Path, offset: int) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while block := f.read(UPLOAD_CHUNK):
            yield block
