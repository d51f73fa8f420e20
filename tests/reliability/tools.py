"""Instruments for the reliability tests: a throttled, severable TCP proxy, raw HTTP requests
(byte for byte, no client-side normalising), the board's storage as files, its memory, and the
figures each test records for RELIABILITY.md."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.harness import CuttableProxy

# ---------------------------------------------------------------- figures


def record(kind: str, **figures) -> None:
    """Note what a run injected and what came of it: printed (``-s`` shows it) and, when
    ``CLIPFARM_RELIABILITY_LOG`` names a file, appended to it as one JSON line."""
    line = json.dumps({"test": kind, "at": round(time.time(), 1), **figures}, sort_keys=True)
    print(f"[reliability] {line}")
    target = os.environ.get("CLIPFARM_RELIABILITY_LOG")
    if target:
        with open(target, "a") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------- network


class ThrottledProxy(CuttableProxy):
    """A CuttableProxy that also limits each connection to ``up_rate`` bytes/s towards the board
    and ``down_rate`` back (a slow home line), counts the bytes it carried each way, and notes
    each request line with the status that answered it (``exchanges``: time, request, status)."""

    def __init__(self, target_port: int, up_rate: float, down_rate: float | None = None) -> None:
        self.rates = {True: up_rate, False: down_rate or up_rate}
        self.up = 0  # farmhand → board
        self.down = 0  # board → farmhand
        self.severed = 0
        self.exchanges: list[tuple[float, str, int]] = []
        self._asked: dict[int, list[str]] = {}
        self._count_lock = threading.Lock()
        super().__init__(target_port)

    def sever(self) -> None:
        self.severed += 1
        super().sever()

    def _note(self, upstream: bool, client: socket.socket, data: bytes) -> None:
        with self._count_lock:
            if upstream:
                self.up += len(data)
                self._asked.setdefault(id(client), []).extend(
                    m.decode() for m in _REQUEST_LINE.findall(data)
                )
            else:
                self.down += len(data)
                for status in _STATUS_LINE.findall(data):
                    asked = self._asked.get(id(client)) or ["?"]
                    self.exchanges.append((time.monotonic(), asked.pop(0), int(status)))

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            upstream = src.getpeername()[1] != self.target_port  # bytes from the farmhand
        except OSError:
            return
        client = src if upstream else dst
        rate = self.rates[upstream]
        block = max(1024, int(rate / 20))
        try:
            while not self.cut.is_set():
                data = src.recv(block)
                if not data:
                    break
                # noted before it is passed on: once the board has the request it may answer
                # before this thread runs again, and an answer must find its request noted
                self._note(upstream, client, data)
                sent_at = time.monotonic()
                dst.sendall(data)
                # no credit for idle time: a keep-alive connection gets no burst
                time.sleep(max(0.0, len(data) / rate - (time.monotonic() - sent_at)))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


_REQUEST_LINE = re.compile(rb"((?:GET|PUT|POST|DELETE) /\S+) HTTP/1\.1\r\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


def raw_request(
    url: str, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request with ``target`` exactly as given (``..``, ``%2e``, a
    backslash are not normalised away as httpx would) and return (status, body)."""
    parsed = httpx.URL(url)
    head = [f"{method} {target} HTTP/1.1", f"Host: {parsed.host}:{parsed.port}",
            "Connection: close", f"Content-Length: {len(body)}"]  # fmt: skip
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((parsed.host, parsed.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload


# ---------------------------------------------------------------- the board's files and memory


def files_under(root: Path) -> dict[str, int]:
    """Every file below ``root`` (relative path → size)."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def storage_files(board, folder: str) -> list[str]:
    """Files in the board's storage folder ``folder`` (media, outputs, uploads, tmp)."""
    root = board.data_dir / "files" / folder
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class RssSampler:
    """The peak resident memory of a process while the ``with`` block runs (sampled every
    20 ms in a thread)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before
