"""Wake-ups between the worker processes of one ``board serve --workers N``.

Each worker has its own event loop and its own ``JobFeed``. A job submitted to one worker would
wake only that worker's long-polling claimers (and only its dashboard streams); the others would
find it at the reaper's next nudge, up to ``BOARD_REAP_INTERVAL_S`` later. ``Siblings`` copies
every wake-up to the other workers over Unix datagram sockets in a private folder named after
the data directory: one datagram per sibling per turn of the event loop, however many wake-ups
the turn made. They are hints, like the feed's own: a datagram lost (a sibling restarting, its
buffer full) costs latency, never correctness, because the nudge still runs in every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

import msgspec

from board.notify import JobFeed

log = logging.getLogger("board.siblings")
REFRESH_S = 1.0  # how often the folder is listed again (a restarted worker has a new pid)
MAX_IDS = 2000  # job ids per datagram: about 60 KB, well under a Unix socket's send buffer

# (new claimable jobs, farm changed, wake every claimer, job ids that changed)
Hint = tuple[int, bool, bool, list[str]]
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Hint).decode


def supported() -> bool:
    """Whether this system has Unix datagram sockets (every POSIX system; not Windows)."""
    return os.name == "posix" and hasattr(socket, "AF_UNIX")


def folder_for(data_dir: Path) -> Path:
    """The sockets' folder for one data directory: in the temporary folder, because a socket's
    path has about 100 bytes at most and a data directory's may be longer."""
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"clipfarm-{digest}"


class Siblings:
    """This worker's end: sends what its feed relays, applies what the others send."""

    def __init__(self, folder: Path, feed: JobFeed, *, name: str | None = None) -> None:
        self.folder = folder
        self.feed = feed
        self.path = folder / f"{name or os.getpid()}.sock"
        self.received = 0  # hints applied (for tests and troubleshooting)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peers: list[str] = []
        self._listed_at = float("-inf")
        self._jobs: set[str] = set()
        self._work = 0
        self._changed = False
        self._wake_all = False
        self._scheduled = False

    def start(self) -> None:
        """Bind this worker's socket and start relaying (call on the event loop)."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
        if self.folder.stat().st_uid != os.getuid():
            raise PermissionError(
                f"{self.folder} belongs to another user: the board's workers cannot share it"
            )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a killed process that had this pid
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(str(self.path))
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._read)
        self.feed.relay = self

    def close(self) -> None:
        if self._sock is None:
            return
        self.feed.relay = None
        with contextlib.suppress(Exception):  # the loop may be closing already
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # What the feed relays: gathered until the end of this turn of the loop.
    def job_changed(self, job_id: str) -> None:
        self._jobs.add(job_id)
        self._schedule()

    def work_available(self, jobs: int) -> None:
        self._work += jobs
        self._schedule()

    def farm_changed(self, *, wake_all: bool) -> None:
        self._changed = True
        self._wake_all = self._wake_all or wake_all
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._sock is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        ids, hint = list(self._jobs), (self._work, self._changed, self._wake_all)
        self._jobs, self._work, self._changed, self._wake_all = set(), 0, False, False
        if self._sock is None:
            return
        messages = [_encode((*hint, ids[:MAX_IDS]))]
        messages += [
            _encode((0, False, False, ids[i : i + MAX_IDS]))
            for i in range(MAX_IDS, len(ids), MAX_IDS)
        ]
        for peer in self._siblings():
            for message in messages:
                try:
                    self._sock.sendto(message, peer)
                except BlockingIOError:
                    break  # its buffer is full: it is behind, and its nudge will find the work
                except (ConnectionRefusedError, FileNotFoundError):  # that worker is gone
                    self._forget(peer)
                    break
                except OSError as exc:
                    log.warning("cannot pass a wake-up to %s: %s", peer, exc)
                    break

    def _siblings(self) -> list[str]:
        now = time.monotonic()
        if now - self._listed_at >= REFRESH_S:
            self._listed_at = now
            try:
                names = os.listdir(self.folder)
            except FileNotFoundError:
                names = []
            own = self.path.name
            self._peers = [
                os.path.join(self.folder, n) for n in names if n.endswith(".sock") and n != own
            ]
        return self._peers

    def _forget(self, peer: str) -> None:
        """A socket nobody listens on is a dead worker's: remove it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(peer)
        with contextlib.suppress(ValueError):
            self._peers.remove(peer)

    def _read(self) -> None:
        while self._sock is not None:
            try:
                data = self._sock.recv(1 << 18)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("cannot read wake-ups from the other workers: %s", exc)
                return
            try:
                work, changed, wake_all, ids = _decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("ignored a malformed wake-up of %d bytes", len(data))
                continue
            self.received += 1
            self.feed.apply_relayed(work=work, changed=changed, wake_all=wake_all, job_ids=ids)
