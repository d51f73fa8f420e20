"""The people and machines that talk to a board in these tests, over real HTTP.

``Submitter`` uploads media and submits jobs; ``Farmhand`` claims them and works through a
``Lease`` (context, heartbeats, upload, complete, fail, release) exactly as the wire contract says.
Each method returns the ``httpx.Response`` so a test can assert the status it expects; the few
that return parsed values say so.

A ``lane`` is a unique requirement tag: jobs submitted in a lane carry it, farmhands of the lane
report it, so tests sharing one board never take each other's jobs (a job's tags must be a subset
of the farmhand's tags; every job on a shared board has a lane tag).
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.harness import RunningBoard

API = "/api/v1"
CPU_H264 = ("libx264",)
CPU_ALL = ("libx264", "libx265", "libsvtav1")
GPU_H264 = ("h264_nvenc", "libx264")  # hardware H.264 only: no hardware HEVC
GPU_ALL = ("h264_nvenc", "hevc_nvenc", "libx264", "libx265")


def http_client(board: RunningBoard, token: str | None = None) -> httpx.Client:
    """A client for ``board`` (plain HTTP: skipping the TLS set-up makes it 100× cheaper to
    make, which matters when a test makes dozens)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=board.url, headers=headers, timeout=30, verify=False)


def make_token(board: RunningBoard, role: str, name: str) -> str:
    """A new token of ``role`` (a submitter token makes a submitter of the same name)."""
    with http_client(board, board.admin_token) as admin:
        r = admin.post(f"{API}/tokens", json={"role": role, "name": name})
        assert r.status_code == 201, r.text
        return r.json()["token"]


def new_lane() -> str:
    return f"lane-{secrets.token_hex(4)}"


def capabilities(
    encoders: tuple[str, ...] = CPU_H264,
    *,
    tags: tuple[str, ...] = (),
    gpu_memory_mb: int = 0,
    slots: int = 1,
) -> dict[str, Any]:
    """What a farmhand reports. Naming a hardware encoder makes it a "GPU farmhand"."""
    gpus = [{"name": "Test GPU", "memory_mb": gpu_memory_mb}] if gpu_memory_mb else []
    return {
        "encoders": list(encoders),
        "gpus": gpus,
        "cores": 2,
        "memory_mb": 4096,
        "disk_free_mb": 10_000,
        "ffmpeg_version": "5.1",
        "tags": list(tags),
        "slots": slots,
    }


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(predicate, *, timeout: float = 10.0, every: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that, or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Submitter:
    """A submitter token and its HTTP client."""

    def __init__(self, board: RunningBoard, *, lane: str | None = None, name: str | None = None):
        self.board = board
        self.name = name or f"sub-{secrets.token_hex(3)}"
        self.lane = lane
        self.token = make_token(board, "submitter", self.name)
        self.http = http_client(board, self.token)

    def upload(self, path: Path, *, expect: int | tuple[int, ...] = (200, 201)) -> dict:
        """Upload a file as media; returns the media view."""
        r = self.http.post(
            f"{API}/media", params={"filename": path.name}, content=path.read_bytes()
        )
        expected = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in expected, r.text
        return r.json()

    def compilation(self, *clips: str, **extra: Any) -> dict:
        """A compilation of board media ids (at least one clip)."""
        return {
            "title": extra.pop("title", "test"),
            "clips": [{"media": m} for m in clips],
            **extra,
        }

    def body(self, compilation: dict, **extra: Any) -> dict:
        """A submit body; the lane tag is added to the requirements."""
        requirements = dict(extra.pop("requirements", {}) or {})
        if self.lane:
            requirements["tags"] = [*requirements.get("tags", []), self.lane]
        return {"compilation": compilation, "requirements": requirements, **extra}

    def submit(self, compilation: dict, **extra: Any) -> httpx.Response:
        return self.http.post(f"{API}/jobs", json=self.body(compilation, **extra))

    def submit_ok(self, compilation: dict, **extra: Any) -> dict:
        r = self.submit(compilation, **extra)
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.http.get(f"{API}/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def history(self, job_id: str) -> dict:
        r = self.http.get(f"{API}/jobs/{job_id}/history")
        assert r.status_code == 200, r.text
        return r.json()

    def close(self) -> None:
        self.http.close()


@dataclass
class Lease:
    """A claimed job as its farmhand holds it."""

    farmhand: Farmhand
    job_id: str
    token: str
    heartbeat_interval_s: float
    answer: dict = field(default_factory=dict)

    @property
    def _base(self) -> str:
        return f"{API}/farmhand/jobs/{self.job_id}"

    @property
    def _http(self) -> httpx.Client:
        return self.farmhand.http

    def context(self) -> httpx.Response:
        return self._http.get(f"{self._base}/context", headers={"X-Lease-Token": self.token})

    def heartbeat(self, progress: float = 0.1, stage: str = "rendering", **extra) -> httpx.Response:
        body = {"lease_token": self.token, "stage": stage, "progress": progress, **extra}
        return self._http.post(f"{self._base}/heartbeat", json=body)

    def upload_headers(self, data: bytes, **extra: str) -> dict[str, str]:
        return {
            "X-Lease-Token": self.token,
            "X-Upload-Sha256": sha256_of(data),
            "X-Upload-Size": str(len(data)),
            **extra,
        }

    def upload(self, data: bytes, *, start: int = 0) -> httpx.Response:
        """PUT ``data[start:]`` (with a Content-Range when resuming)."""
        headers = self.upload_headers(data)
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return self._http.put(f"{self._base}/output", content=data[start:], headers=headers)

    def upload_status(self) -> httpx.Response:
        return self._http.get(f"{self._base}/output", headers={"X-Lease-Token": self.token})

    def upload_cut(self, data: bytes, sent: int) -> None:
        """Start uploading ``data`` but break the connection after ``sent`` bytes, as a farmhand
        whose network dropped would."""
        url = httpx.URL(self.farmhand.board.url)
        head = [
            f"PUT {self._base}/output HTTP/1.1",
            f"Host: {url.host}:{url.port}",
            f"Authorization: Bearer {self.farmhand.token}",
            f"Content-Length: {len(data)}",
            *(f"{k}: {v}" for k, v in self.upload_headers(data).items()),
        ]
        with socket.create_connection((url.host, url.port)) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data[:sent])
            time.sleep(0.2)  # let the board read what was sent before the line drops

    def _done(self, r: httpx.Response) -> httpx.Response:
        if r.status_code in (200, 409):  # finished, or no longer ours: either way not held
            self.farmhand.holding.discard(self.job_id)
        return r

    def complete(self, **extra: Any) -> httpx.Response:
        body = {"lease_token": self.token, **extra}
        return self._done(self._http.post(f"{self._base}/complete", json=body))

    def fail(self, error: str = "ffmpeg crashed", *, retryable: bool = True) -> httpx.Response:
        body = {"lease_token": self.token, "error": error, "retryable": retryable}
        return self._done(self._http.post(f"{self._base}/fail", json=body))

    def release(self, reason: str = "farmhand shutting down") -> httpx.Response:
        body = {"lease_token": self.token, "reason": reason}
        return self._done(self._http.post(f"{self._base}/release", json=body))

    def finish(self, output: bytes) -> None:
        """Heartbeat, upload the whole output and complete: the happy path in one call."""
        assert self.heartbeat(0.5).status_code == 200
        r = self.upload(output)
        assert r.status_code == 200 and r.json()["complete"], r.text
        r = self.complete(encoder="libx264")
        assert r.status_code == 200, r.text


class Farmhand:
    """A farmhand token, a name and the capabilities it reports."""

    def __init__(
        self,
        board: RunningBoard,
        *,
        lane: str | None = None,
        encoders: tuple[str, ...] = CPU_H264,
        name: str | None = None,
        token: str | None = None,
        gpu_memory_mb: int = 0,
        slots: int = 1,
    ):
        self.board = board
        self.name = name or f"fh-{secrets.token_hex(3)}"
        self.token = token or make_token(board, "farmhand", self.name)
        tags = (lane,) if lane else ()
        self.capabilities = capabilities(
            encoders, tags=tags, gpu_memory_mb=gpu_memory_mb, slots=slots
        )
        self.http = http_client(board, self.token)
        self.holding: set[str] = set()  # job ids it holds, told to the board on every claim

    def claim_response(self, wait_s: float = 0.0) -> httpx.Response:
        body = {"farmhand": self.name, "capabilities": self.capabilities, "wait_s": wait_s,
                "running": sorted(self.holding)}  # fmt: skip
        return self.http.post(f"{API}/farmhand/claim", json=body, timeout=wait_s + 30)

    def claim(self, wait_s: float = 0.0) -> Lease | None:
        """Claim one job; None on 204."""
        r = self.claim_response(wait_s)
        if r.status_code == 204:
            return None
        assert r.status_code == 200, r.text
        answer = r.json()
        self.holding.add(answer["job_id"])
        return Lease(self, answer["job_id"], answer["lease_token"], answer["heartbeat_interval_s"],
                     answer)  # fmt: skip

    def claim_ok(self, wait_s: float = 0.0) -> Lease:
        lease = self.claim(wait_s)
        assert lease is not None, f"{self.name} got no job"
        return lease

    def report_status(self, *, paused: bool = False, reason: str = "") -> httpx.Response:
        body = {"farmhand": self.name, "paused": paused, "reason": reason,
                "capabilities": self.capabilities}  # fmt: skip
        return self.http.post(f"{API}/farmhand/status", json=body)

    def close(self) -> None:
        self.http.close()


def farmhand_view(board: RunningBoard, name: str) -> dict:
    """The admin's view of one farmhand (GET /api/v1/farmhands)."""
    with http_client(board, board.admin_token) as admin:
        r = admin.get(f"{API}/farmhands")
        assert r.status_code == 200, r.text
    for view in r.json():
        if view["name"] == name:
            return view
    raise AssertionError(f"no farmhand {name} in GET /api/v1/farmhands")


def board_tracebacks(board: RunningBoard) -> list[str]:
    """Lines of the board's log that show an unhandled error."""
    text = board.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if "Traceback" in line or " 500 " in line]
