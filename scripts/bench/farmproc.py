"""A board process for a benchmark: ``board.spawn`` (the same ``board serve`` a user runs) in a
fresh data folder, on SQLite or a fresh PostgreSQL database, from this checkout or, with
``source``, from another one (``git worktree add /tmp/before 3258d3f``) run on this venv."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from board.spawn import BoardProcess, board_env  # noqa: E402
from tests.harness import PG_DEFAULT, create_pg_database, drop_pg_database  # noqa: E402
from wire import Capabilities  # noqa: E402

# what a benchmark farmhand says it can do
CAPS = Capabilities(encoders=["libx264", "libx265", "libsvtav1"], cores=8, slots=1)


class BenchBoard(BoardProcess):
    """A started board with an admin token (``admin_token``); ``close()`` removes its
    database."""

    def __init__(
        self,
        engine: str = "sqlite",
        env: dict[str, str] | None = None,
        source: Path | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clipfarm-bench-"))
        self.pg_base = os.environ.get("CLIPFARM_BENCH_PG", PG_DEFAULT)
        self.pg_name: str | None = None
        if engine == "postgres":
            database, self.pg_name = create_pg_database(self.pg_base, prefix="clipfarm_bench")
        else:
            database = f"sqlite:///{self.dir}/board.db"
        settings = dict(env or {})
        if source is not None:  # that checkout's board, wire and timeline come first
            settings["PYTHONPATH"] = str(source.resolve())
        super().__init__(
            board_env(self.dir, database, **settings), self.dir / "board.log", cwd=source
        )
        self.create_admin("admin")
        self.start()

    def token(self, role: str, name: str) -> str:
        return self.issue_token(role, name)

    def processes(self) -> list[psutil.Process]:
        """The board's processes: ``board serve`` and any it started."""
        main = psutil.Process(self.proc.pid)
        return [main, *main.children(recursive=True)]

    def close(self) -> None:
        self.stop()
        if self.pg_name:
            drop_pg_database(self.pg_name, self.pg_base)


def tiny_mp4() -> bytes:
    """A real half-second 64x64 h264 mp4: what a simulated farmhand uploads."""
    path = Path(tempfile.mkdtemp()) / "tiny.mp4"
    subprocess.run(
        [os.environ.get("FFMPEG_BINARY", "ffmpeg"), "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc2=size=64x64:rate=10:duration=0.5", "-c:v", "libx264", "-preset", "ultrafast",
         str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()
