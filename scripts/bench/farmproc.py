"""Start a board process for a benchmark (the same `board serve` a user runs)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

# what a benchmark farmhand says it can do
CAPS = {"encoders": ["libx264", "libx265", "libsvtav1"], "cores": 8, "slots": 1}
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg(url: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


class BenchBoard:
    def __init__(
        self, engine: str = "sqlite", env: dict[str, str] | None = None, workers: int = 1
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clipfarm-bench-"))
        self.pg_name = None
        if engine == "postgres":
            base = os.environ.get("CLIPFARM_BENCH_PG", PG_DEFAULT)
            self.pg_name = f"clipfarm_bench_{secrets.token_hex(4)}"
            self.pg_base = base
            _pg(base, f'CREATE DATABASE "{self.pg_name}"')
            db = base.rsplit("/", 1)[0] + "/" + self.pg_name
        else:
            db = f"sqlite:///{self.dir}/board.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "BOARD_DATA_DIR": str(self.dir),
            "BOARD_DATABASE_URL": db,
            "BOARD_WORKERS": str(workers),
            **(env or {}),
        }
        self.admin = self._cli("token", "create", "--role", "admin", "--name", "admin")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "board.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=open(self.dir / "board.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError((self.dir / "board.log").read_text())

    def _cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "board.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    def token(self, role: str, name: str) -> str:
        r = httpx.post(
            f"{self.url}/api/v1/tokens",
            json={"role": role, "name": name},
            headers={"Authorization": f"Bearer {self.admin}"},
        )
        r.raise_for_status()
        return r.json()["token"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def processes(self) -> list[psutil.Process]:
        """The board's processes: ``board serve`` and, with workers, each worker."""
        main = psutil.Process(self.proc.pid)
        return [main, *main.children(recursive=True)]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.pg_name:
            _pg(self.pg_base, f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


def tiny_mp4() -> bytes:
    path = Path(tempfile.mkdtemp()) / "tiny.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x64:rate=10:duration=0.5",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            str(path),
        ],
        check=True,
    )
    return path.read_bytes()
