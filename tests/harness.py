"""Real processes for tests: a board (``board serve``) on SQLite or its own PostgreSQL database,
reached over real HTTP."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from board.spawn import BoardProcess, board_env, free_port, stop_process
from farmhand.config import beside_a_board_env

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def pg_base_url() -> str | None:
    """The PostgreSQL server tests may create databases on, or None to skip PostgreSQL tests."""
    url = os.environ.get("CLIPFARM_TEST_PG", PG_DEFAULT)
    return None if url.lower() in ("", "none", "off") else url


def _pg_exec(url: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # in a thread of its own: a test may already run an event loop here (Playwright's sync API)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(run())).result()


@functools.cache
def pg_available() -> bool:
    """Whether PostgreSQL answers; asked once per session, so a server busy at some later
    moment fails those tests loudly instead of silently skipping them."""
    url = pg_base_url()
    if url is None:
        return False
    try:
        _pg_exec(url, "SELECT 1")
    except Exception:
        return False
    return True


def missing(what: str, required_by: str) -> None:
    """Skip the test for want of ``what``, or fail it where the environment variable
    ``required_by`` is 1 (``.ci/run`` sets them: CI must never pass by skipping)."""
    import pytest

    if os.environ.get(required_by) == "1":
        pytest.fail(f"{what}, and {required_by}=1 says these tests must run here", pytrace=False)
    pytest.skip(what)


def require_pg() -> None:
    """Skip (or, under CLIPFARM_REQUIRE_PG=1, fail) a PostgreSQL test when PostgreSQL is not
    reachable."""
    if not pg_available():
        missing("PostgreSQL not reachable (set CLIPFARM_TEST_PG)", "CLIPFARM_REQUIRE_PG")


def create_pg_database(base: str | None = None, prefix: str = "clipfarm_test") -> tuple[str, str]:
    """A fresh, empty database on the server of ``base`` (default: the tests' server); returns
    (its URL, its name)."""
    base = base or pg_base_url()
    name = f"{prefix}_{secrets.token_hex(4)}"
    _pg_exec(base, f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name, name


def drop_pg_database(name: str, base: str | None = None) -> None:
    _pg_exec(base or pg_base_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RunningBoard(BoardProcess):
    """A ``board serve`` process (``board.spawn``) with its own data folder and an admin token.
    ``engine`` is "sqlite" or "postgres" (a fresh database of its own, dropped by ``close``)."""

    def __init__(self, data_dir: Path, engine: str = "sqlite", env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.engine = engine
        self.pg_name: str | None = None
        if engine == "postgres":
            self.database_url, self.pg_name = create_pg_database()
        else:
            self.database_url = f"sqlite:///{data_dir}/board.db"
        # many boards share one test PostgreSQL (100 connections)
        settings = {"BOARD_DB_POOL_SIZE": "4", **(env or {})}
        super().__init__(board_env(data_dir, self.database_url, **settings), data_dir / "board.log")
        self.create_admin("admin")

    def log(self) -> str:
        return self.log_tail()

    def restart(self) -> RunningBoard:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self.pg_name:
            drop_pg_database(self.pg_name)

    def client(self, token: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs
        )

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def token(self, role: str, name: str | None = None) -> str:
        """A new token of ``role`` (a submitter token makes a submitter of the same name)."""
        return self.issue_token(role, name or f"{role}-{secrets.token_hex(3)}")


class RunningFarmhand:
    """A ``farmhand run`` process against a RunningBoard, with its own state and cache."""

    def __init__(
        self,
        board: RunningBoard,
        root: Path,
        name: str,
        token: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.board = board
        self.name = name
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.token = token or board.token("farmhand", f"fh-{name}")
        self.env = {
            **beside_a_board_env(board.url, self.token, name, root, wait_s=5),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.log_path = root / "farmhand.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RunningFarmhand:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "farmhand.cli", "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 30)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that, or fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def ffprobe(path: Path) -> dict:
    """ffprobe's JSON view of a media file: its ``format`` and ``streams``."""
    out = subprocess.run(
        [os.environ.get("FFPROBE_BINARY", "ffprobe"), "-v", "error", "-show_format",
         "-show_streams", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)


def ffmpeg_children_of(pid: int) -> list[int]:
    """ffmpeg processes descended from ``pid`` (or orphaned ones whose command line says so)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c.pid for c in children if "ffmpeg" in (c.name() or "")]


class CuttableProxy:
    """A TCP proxy between a farmhand and the board that the test can sever and heal: while cut,
    every open connection is dropped and new ones are refused (like a pulled network cable)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cut = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def sever(self) -> None:
        self.cut.set()
        with self._lock:
            for s in list(self._open):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._open.clear()

    def heal(self) -> None:
        self.cut.clear()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sever()
        self.listener.close()


# ---------------------------------------------------------------- an S3-compatible store


class S3Server:
    """The tests' S3-compatible server (``tests.s3server``: moto in server mode with S3's own
    checks of presigned URLs) on a free port of 127.0.0.1, and buckets on it."""

    def __init__(self, log_path: Path) -> None:
        from tests.s3server import ACCESS_KEY, SECRET_KEY

        self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.s3server", str(self.port)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=open(log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/", timeout=2)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(
                        f"the S3 test server did not start; see {log_path}"
                    ) from None
                time.sleep(0.1)

    def client(self):
        """A boto3 S3 client with the server's credentials."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )  # fmt: skip

    def new_bucket(self) -> str:
        name = f"clipfarm-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def board_env(self, bucket: str | None = None, **extra: str) -> dict[str, str]:
        """The settings of a board keeping its files in ``bucket`` (a new one by default)."""
        return {
            "BOARD_STORAGE": "s3",
            "BOARD_S3_ENDPOINT": self.url,
            "BOARD_S3_BUCKET": bucket or self.new_bucket(),
            "BOARD_S3_ACCESS_KEY": self.access_key,
            "BOARD_S3_SECRET_KEY": self.secret_key,
            **extra,
        }

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def close(self) -> None:
        stop_process(self.proc, 10)


_s3: list[S3Server] = []


def s3_server(log_dir: Path) -> S3Server:
    """The session's S3 server, started on first use (stopped by ``stop_s3_server``). Skips the
    test where moto is not installed, or fails it under CLIPFARM_REQUIRE_S3=1."""
    if not _s3:
        try:
            import moto  # noqa: F401
        except ImportError:
            missing("moto is not installed (pip install 'clipfarm[test]')", "CLIPFARM_REQUIRE_S3")
        _s3.append(S3Server(log_dir / "s3server.log"))
    return _s3[0]


def stop_s3_server() -> None:
    while _s3:
        _s3.pop().close()
