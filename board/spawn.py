"""Start a board process and wait until it answers: the one way the demo, the tests and the
benchmarks run ``board serve``.

:class:`BoardProcess` runs ``python -m board.cli serve`` with the environment it is given (which
says the database and data folder: ``BOARD_DATABASE_URL``, ``BOARD_DATA_DIR``…), its output
appended to a log file, in a session of its own (a Ctrl-C in the terminal reaches only the
program that started it, which stops the board in its turn). :meth:`BoardProcess.start` returns
once ``GET /health`` answers 200 and raises :class:`BoardStartError` with the end of the log when
the board exits or stays silent. Tokens are made with ``board token create`` (before the board
serves, too) or, many at a time, through the admin API with the admin token made that way.

Its attributes are plain (``port``, ``url``, ``log_path``, ``proc``…): a copy with another port
and log starts a second board process on the same database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Self

import httpx

from wire import routes

LOG_TAIL_CHARS = 5000


class BoardStartError(RuntimeError):
    """The board did not come up (or a ``board`` command failed); the message ends with the
    tail of its output."""


def free_port() -> int:
    """A TCP port nothing on this machine listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BoardProcess:
    """One ``board serve`` on ``127.0.0.1:port`` (``port`` None: a free one).

    ``env`` is the whole environment of the board and of its ``board`` commands (``BOARD_...``
    settings included); ``cwd`` the folder they run in (with ``PYTHONPATH`` in ``env``, a board
    from another checkout)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        port: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.env = {**env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.admin_token: str | None = None

    # ------------------------------------------------------------ board commands and tokens

    def cli(self, *args: str, timeout_s: float = 120) -> str:
        """Run ``board ARGS`` on this board's database; returns the last line it printed."""
        done = subprocess.run(
            [sys.executable, "-m", "board.cli", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise BoardStartError(
                f"board {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
            )
        lines = done.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def create_token(self, role: str, name: str) -> str:
        """``board token create --role ROLE --name NAME``: the new token (the board need not
        be serving)."""
        return self.cli("token", "create", "--role", role, "--name", name)

    def create_admin(self, name: str = "admin") -> str:
        """Make the admin token that :meth:`issue_token` uses; returns it."""
        self.admin_token = self.create_token("admin", name)
        return self.admin_token

    def issue_token(self, role: str, name: str) -> str:
        """A new token through the admin API (``POST /api/v1/tokens``), with the admin token
        of :meth:`create_admin`: no process start, unlike ``board token create``."""
        return self.issue_tokens(role, [name])[0]

    def issue_tokens(self, role: str, names: Iterable[str]) -> list[str]:
        """:meth:`issue_token` for many names over one connection (a simulated fleet's)."""
        if self.admin_token is None:
            raise BoardStartError("issuing tokens needs create_admin() first")
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            return [
                http.post(routes.TOKENS, json={"role": role, "name": name})
                .raise_for_status()
                .json()["token"]
                for name in names
            ]

    # ------------------------------------------------------------ the process

    def start(self, timeout_s: float = 60) -> Self:
        """Spawn ``board serve`` and wait for ``GET /health`` to answer 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "board.cli", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BoardStartError(
                    f"the board exited ({self.proc.returncode}) at start; "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}{routes.HEALTH}", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.1)
        self.stop()
        raise BoardStartError(
            f"the board did not answer {routes.HEALTH} within {timeout_s:g} s; "
            f"{self.log_path}:\n{self.log_tail()}"
        )

    def exited(self) -> int | None:
        """The board's exit status if it has stopped, else None."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, sig: int = signal.SIGTERM, wait_s: float = 15) -> None:
        """Send ``sig`` and wait up to ``wait_s`` for the board to exit (then kill it)."""
        if self.proc is not None:
            stop_process(self.proc, wait_s, sig)
        self.proc = None

    def kill(self) -> None:
        """Stop the board the hard way (SIGKILL), as a crash would."""
        self.stop(signal.SIGKILL)

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of the board's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def stop_process(proc: subprocess.Popen, wait_s: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``proc`` if it still runs, wait up to ``wait_s`` for it, then kill it."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def board_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment with a board's data folder and database (None: the
    embedded SQLite default in ``data_dir``), plus ``extra`` ``BOARD_...`` settings."""
    env = {**os.environ, "BOARD_DATA_DIR": str(data_dir), **extra}
    if database_url is None:
        env.pop("BOARD_DATABASE_URL", None)
    else:
        env["BOARD_DATABASE_URL"] = database_url
    return env
