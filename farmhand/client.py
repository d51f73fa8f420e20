"""The farmhand's side of the wire contract: one typed method per board route.

Network trouble and 5xx answers are retried with backoff (tenacity); the board saying "this lease
is gone" (409) is ``LeaseLost`` and never retried. A board that stays unreachable raises
``BoardUnreachable`` after the call's deadline, and the caller decides (a heartbeat just tries
again next interval; an upload keeps trying while the lease may still be alive).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from wire import (
    API,
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
    error_detail,
)

log = logging.getLogger("farmhand.client")
UPLOAD_CHUNK = 1024 * 1024


class BoardError(Exception):
    """The board refused a call; ``str()`` is the board's own message."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class LeaseLost(BoardError):
    """409: this farmhand no longer holds the job (expired, requeued, cancelled). Abort."""


class BoardUnreachable(BoardError):
    """No answer (or only 5xx) from the board within the call's deadline."""


class _Retry(Exception):
    """A transient answer worth another try (5xx, 429, connection trouble)."""


def _detail(response: httpx.Response) -> str:
    return error_detail(response.content, response.reason_phrase)


def sha256_of(path: Path) -> str:
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
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        deadline_s: float,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request, retried on connection trouble and 5xx until ``deadline_s``."""
        if timeout_s is not None:
            kwargs["timeout"] = httpx.Timeout(timeout_s, connect=10.0)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retry),
            wait=wait_exponential_jitter(multiplier=0.5, max=15.0),
            stop=stop_after_delay(deadline_s),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        response = await self.http.request(method, path, **kwargs)
                    except httpx.TransportError as exc:
                        raise _Retry(f"board unreachable: {type(exc).__name__}: {exc}") from exc
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _Retry(f"board answered {response.status_code}: {_detail(response)}")
        except _Retry as exc:
            raise BoardUnreachable(str(exc)) from exc
        if response.status_code == 409:
            raise LeaseLost(_detail(response), 409)
        if response.status_code >= 400:
            raise BoardError(
                f"{method} {path}: {response.status_code} {_detail(response)}", response.status_code
            )
        return response

    # ------------------------------------------------------------ farm

    async def claim(
        self, capabilities: Capabilities, *, wait_s: float, running: list[str]
    ) -> Claim | None:
        body = ClaimRequest(
            farmhand=self.name, capabilities=capabilities, wait_s=wait_s, running=running
        )
        response = await self._call(
            "POST",
            f"{API}/farmhand/claim",
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
        body = FarmhandStatus(
            farmhand=self.name, paused=paused, reason=reason, capabilities=capabilities
        )
        response = await self._post_json(f"{API}/farmhand/status", body, deadline_s=deadline_s)
        return msgspec.json.decode(response.content, type=FarmhandStatusReply)

    # ------------------------------------------------------------ the held job

    async def context(self, job_id: str, lease_token: str) -> JobContext:
        response = await self._call(
            "GET",
            f"{API}/farmhand/jobs/{job_id}/context",
            deadline_s=60,
            headers={LEASE_HEADER: lease_token},
        )
        return msgspec.json.decode(response.content, type=JobContext)

    async def heartbeat(self, job_id: str, beat: Heartbeat, *, deadline_s: float) -> HeartbeatReply:
        response = await self._post_json(
            f"{API}/farmhand/jobs/{job_id}/heartbeat", beat, deadline_s=deadline_s
        )
        return msgspec.json.decode(response.content, type=HeartbeatReply)

    async def complete(self, job_id: str, done: Complete, *, deadline_s: float) -> None:
        await self._post_json(f"{API}/farmhand/jobs/{job_id}/complete", done, deadline_s=deadline_s)

    async def fail(self, job_id: str, failure: Fail, *, deadline_s: float) -> None:
        await self._post_json(f"{API}/farmhand/jobs/{job_id}/fail", failure, deadline_s=deadline_s)

    async def release(self, job_id: str, rel: Release, *, deadline_s: float = 10.0) -> None:
        await self._post_json(f"{API}/farmhand/jobs/{job_id}/release", rel, deadline_s=deadline_s)

    async def _post_json(self, path: str, body: Any, *, deadline_s: float) -> httpx.Response:
        return await self._call(
            "POST",
            path,
            deadline_s=deadline_s,
            content=msgspec.json.encode(body),
            headers={"Content-Type": "application/json"},
        )

    # ------------------------------------------------------------ upload

    async def upload_output(
        self, job_id: str, lease_token: str, path: Path, *, sha256: str, deadline_s: float
    ) -> UploadStatus:
        """Upload ``path`` resumably: ask the board how much it has, send the rest; after a cut,
        ask again and continue. Retried until ``deadline_s``."""
        size = path.stat().st_size
        url = f"{API}/farmhand/jobs/{job_id}/output"
        declared = {
            LEASE_HEADER: lease_token,
            UPLOAD_SHA256_HEADER: sha256,
            UPLOAD_SIZE_HEADER: str(size),
        }
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((_Retry, BoardUnreachable)),
            wait=wait_exponential_jitter(multiplier=0.5, max=15.0),
            stop=stop_after_delay(deadline_s),
            reraise=True,
        )
        try:
            return await retrying(self._upload_once, url, path, declared, size)
        except _Retry as exc:
            raise BoardUnreachable(str(exc)) from exc

    async def _upload_once(
        self, url: str, path: Path, declared: dict[str, str], size: int
    ) -> UploadStatus:
        status = msgspec.json.decode(
            (await self._call("GET", url, deadline_s=30, headers=declared)).content,
            type=UploadStatus,
        )
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
            response = await self.http.put(
                url,
                content=_read_from(path, offset),
                headers=headers,
                timeout=httpx.Timeout(120.0, connect=10.0),
            )
        except httpx.TransportError as exc:
            raise _Retry(f"upload cut after byte {offset}: {exc}") from exc
        if response.status_code == 409:
            raise LeaseLost(_detail(response), 409)
        if response.status_code == 416 or response.status_code >= 500:
            raise _Retry(f"upload answered {response.status_code}: {_detail(response)}")
        if response.status_code >= 400:
            raise BoardError(
                f"upload refused: {response.status_code} {_detail(response)}", response.status_code
            )
        status = msgspec.json.decode(response.content, type=UploadStatus)
        if not status.complete:
            raise _Retry(f"board has {status.received} of {size} bytes")
        return status

    async def upload_thumbnail(self, job_id: str, lease_token: str, path: Path) -> None:
        await self._call(
            "PUT",
            f"{API}/farmhand/jobs/{job_id}/thumbnail",
            deadline_s=60,
            content=path.read_bytes(),
            headers={LEASE_HEADER: lease_token, "Content-Type": "image/jpeg"},
        )


async def _read_from(path: Path, offset: int) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while block := f.read(UPLOAD_CHUNK):
            yield block
