"""A small, fast HTTP/1.1 keep-alive client for load generation.

httpx spends more CPU per request than the board does to answer it, and on a 2-core machine the
load generator shares the CPU with the board: a load generator that is cheap per request is what
lets the benchmark measure the board. Requests are JSON or raw bytes; one connection per worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self):
        return json.loads(self.body)


class Connection:
    """One persistent HTTP/1.1 connection; requests on it are sequential."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body=None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if self.writer is None:
            await self._connect()
        payload = (
            body
            if body is not None
            else (json.dumps(json_body).encode() if json_body is not None else b"")
        )
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        ctype = "Content-Type: application/json\r\n" if json_body is not None else ""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}{ctype}{extra}"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self.writer.write(head + payload)
        status_line = await self.reader.readline()
        if not status_line:
            self.writer = None
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        found: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            found[name.strip().lower()] = value.strip()
        if found.get("transfer-encoding") == "chunked":
            data = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                data += await self.reader.readexactly(size)
                await self.reader.readline()
        else:
            data = await self.reader.readexactly(int(found.get("content-length", "0")))
        if found.get("connection") == "close":
            self.writer.close()
            self.writer = None
        return Reply(status, data, found)

    async def request(self, method: str, path: str, **kwargs) -> Reply:
        """Send a request; a kept-alive connection the server closed meanwhile is reopened once
        (as any HTTP client does)."""
        reused = self.writer is not None
        try:
            return await self._request(method, path, **kwargs)
        except (ConnectionError, asyncio.IncompleteReadError):
            if self.writer is not None:
                self.writer.close()
            self.writer = None
            if not reused:
                raise
            return await self._request(method, path, **kwargs)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class Latencies:
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def pct(self, name: str, p: float) -> float:
        values = sorted(self.samples.get(name, []))
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def timed(lat: Latencies, name: str, coro):
    started = time.perf_counter()
    result = await coro
    lat.add(name, time.perf_counter() - started)
    return result
