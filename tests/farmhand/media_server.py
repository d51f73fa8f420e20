"""A small threaded HTTP server for fetch tests: serves files with Range support, records every
request, and can be told to cut a connection mid-body, to delay, to answer with a status, or to
redirect elsewhere."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from wire import MediaRef


@dataclass
class Served:
    body: bytes
    content_type: str = "application/octet-stream"
    status: int = 200  # e.g. 404, 409, 503 to answer with that status instead
    cut_at: int | None = None  # close the connection after this many body bytes, once
    delay_s: float = 0.0  # wait before answering (to make concurrent requests overlap)
    location: str | None = None  # answer 302 to this address instead


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class MediaServer:
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def gets(self, path: str) -> list[Request]:
        """GET requests for ``path`` so far."""
        return [r for r in self.requests if r.method == "GET" and r.path == path]


def start_media_server(
    host: str = "127.0.0.1", port: int = 0
) -> tuple[MediaServer, ThreadingHTTPServer]:
    """Serve ``MediaServer.files`` on ``host`` (any 127.x.y.z works on Linux: a second
    "machine" for redirect tests) at ``port`` (default: a free one)."""
    state = MediaServer(host=host)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, *, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            state.requests.append(Request(self.command, path, dict(self.headers.items())))
            served = state.files.get(path)
            if served is None:
                self._plain(404, b"not found")
                return
            if served.delay_s:
                time.sleep(served.delay_s)
            if served.location is not None:
                self.send_response(302)
                self.send_header("Location", served.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if served.status != 200:
                self._plain(served.status, b"refused")
                return
            body, start, status = served.body, 0, 200
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if match:
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else len(body) - 1
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
                body = body[start : end + 1]
            self.send_response(status)
            self.send_header("Content-Type", served.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/"
                                 f"{len(served.body)}")  # fmt: skip
            self.end_headers()
            if head:
                return
            if served.cut_at is not None and start < served.cut_at:
                cut, served.cut_at = served.cut_at, None
                self.wfile.write(body[: cut - start])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the peer sees the body end early
                return
            self.wfile.write(body)

        def _plain(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(text)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return state, server


def serve_media(server: MediaServer, media_id: str, path: Path, **served) -> MediaRef:
    """Serve the file at ``path`` as board media ``media_id``; returns its MediaRef."""
    body = path.read_bytes()
    url = f"/api/v1/media/{media_id}/content"
    server.files[url] = Served(body=body, content_type="video/mp4", **served)
    return MediaRef(
        id=media_id,
        url=url,
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        filename=path.name,
    )


def board_client(server: MediaServer) -> httpx.AsyncClient:
    """A client for the test server, like the farmhand's board client (base URL set)."""
    return httpx.AsyncClient(base_url=server.url, timeout=10)
