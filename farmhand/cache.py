"""The farmhand's media cache: downloaded sources kept on disk, reused across jobs.

An entry is one file, found by a *key*: ``sha256:<hex>`` for board media (the content hash the
board recorded) or ``url:<normalized url>`` for media fetched from the web. The cache is bounded
by ``max_bytes``: when room is needed the least recently used entries go first, but never one
that is *pinned* — in use by a running job of this or another farmhand process sharing the
folder.

Layout under the root folder::

    data/<digest><.ext>     complete entries; the file's mtime is its last use
    partial/<digest>.part   a download in progress, kept so it can resume after a cut
    partial/<digest>.work/  scratch folder of a tool that names its own files (yt-dlp)
    locks/<digest>.fetch    held exclusively while an entry is being fetched or evicted
    locks/<digest>.use      held shared by every job using the entry; eviction needs it
                            exclusively, so it never deletes a file in use

Two jobs wanting the same key at once download it once: the second waits on the first (an
asyncio lock within a process, the ``.fetch`` file lock across processes) and then finds the
entry. Entries appear atomically (rename of a complete, verified file), so a half-written file
is never mistaken for an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from farmhand import platform

log = logging.getLogger(__name__)

LOCK_POLL_S = 0.1  # how often a cross-process lock wait looks again
STALE_PARTIAL_S = 24 * 3600  # partial downloads older than this are abandoned


class CacheError(OSError):
    """The cache folder cannot be used (permissions, full disk); the message says which."""


# ---------------------------------------------------------------- keys


def key_for_sha256(sha256: str) -> str:
    """The cache key of board media with this content hash."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"sha256:{sha256.lower()}"


def key_for_url(url: str) -> str:
    """The cache key of web media: its normalized URL (see :func:`normalize_url`)."""
    return f"url:{normalize_url(url)}"


_TRACKING_PARAMS = {"fbclid", "gclid", "dclid", "msclkid", "igshid", "mc_cid", "mc_eid", "ref_src"}
# On YouTube these choose a start time, a share id or a surrounding playlist, not the video.
_YOUTUBE_IGNORED = {"si", "feature", "pp", "t", "list", "index", "start_radio", "ab_channel"}
_YOUTUBE_HOSTS = {"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com"}


def normalize_url(url: str) -> str:
    """One spelling per piece of web media, so the same clip is fetched once.

    Lower-cases scheme and host, drops default ports, fragments and tracking parameters
    (``utm_*``, ``fbclid``...), sorts the query, and writes YouTube links
    (``youtu.be/ID``, ``/shorts/ID``, ``m.youtube.com``) as ``https://www.youtube.com/watch?v=ID``.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if (scheme, port) in (("http", 80), ("https", 443)):
        port = None
    netloc = host if port is None else f"{host}:{port}"
    if parts.username:
        netloc = f"{parts.username}{':' + parts.password if parts.password else ''}@{netloc}"
    path = parts.path or "/"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith("utm_") and k.lower() not in _TRACKING_PARAMS
    ]
    video_id = None
    if host == "youtu.be" and path.strip("/"):
        video_id = path.strip("/").split("/")[0]
    elif host in _YOUTUBE_HOSTS:
        if path.startswith(("/shorts/", "/live/", "/embed/")):
            video_id = path.split("/")[2]
        elif path == "/watch":
            video_id = dict(query).get("v")
    if video_id:
        return f"https://www.youtube.com/watch?v={video_id}"
    return urlunsplit((scheme, netloc, path, urlencode(sorted(query)), ""))


def _digest(key: str) -> str:
    """The file name stem of a key: the content hash itself, or a hash of the URL key."""
    if key.startswith("sha256:"):
        return key.removeprefix("sha256:")
    return "u" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _suffix(name: str) -> str:
    """A safe file extension from ``name`` (ffmpeg picks image demuxers by it), or ""."""
    ext = Path(name).suffix.lower()
    return ext if re.fullmatch(r"\.[a-z0-9]{1,8}", ext) else ""


# ---------------------------------------------------------------- file locks


class _FileLock:
    """A lock file held by this object: shared or exclusive, across processes.

    Eviction deletes lock files; a lock taken on a file that was unlinked meanwhile is worthless,
    so after locking we check that the path still names the file we locked, and retry if not.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def try_acquire(cls, path: Path, *, exclusive: bool) -> _FileLock | None:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if not platform.lock_file(fd, exclusive=exclusive, blocking=False):
                    os.close(fd)
                    return None
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(path))
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                return cls(path, fd)
            os.close(fd)  # the file was replaced while we locked it: lock the new one

    @classmethod
    async def acquire(cls, path: Path, *, exclusive: bool) -> _FileLock:
        """Wait (without blocking the event loop) until the lock is ours."""
        while True:
            lock = cls.try_acquire(path, exclusive=exclusive)
            if lock is not None:
                return lock
            await asyncio.sleep(LOCK_POLL_S)

    def release(self, *, delete: bool = False) -> None:
        if self.fd < 0:
            return
        if delete:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        platform.unlock_file(self.fd)
        os.close(self.fd)
        self.fd = -1


# ---------------------------------------------------------------- the cache


@dataclass(frozen=True)
class CacheEntry:
    """A complete entry on disk."""

    digest: str
    path: Path
    size: int
    last_used: float  # epoch seconds


class MediaCache:
    """Content cache bounded by ``max_bytes`` with LRU eviction; see the module docstring."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.data_dir = self.root / "data"
        self.partial_dir = self.root / "partial"
        self.lock_dir = self.root / "locks"
        try:
            for folder in (self.data_dir, self.partial_dir, self.lock_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the media cache in {self.root}: {exc}") from exc
        self._key_locks: dict[str, list] = {}  # digest -> [asyncio.Lock, tasks using it]
        self._pins: dict[str, tuple[_FileLock, int]] = {}  # digest -> (use lock, pin count)
        self._drop_stale_partials()

    # -------------------------------------------------------------- reading

    def lookup(self, key: str) -> Path | None:
        """The complete entry for ``key``, or None. Does not pin it."""
        digest = _digest(key)
        for entry in self._scan():
            if entry.digest == digest:
                return entry.path
        return None

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, least recently used first."""
        return sorted(self._scan(), key=lambda e: e.last_used)

    def total_bytes(self) -> int:
        """Bytes held by complete entries (partial downloads are not counted)."""
        return sum(e.size for e in self._scan())

    def partial_path(self, key: str) -> Path:
        """Where a resumable download of ``key`` keeps its bytes between attempts."""
        return self.partial_dir / f"{_digest(key)}.part"

    def work_dir(self, key: str) -> Path:
        """A scratch folder for a tool that names its own output (yt-dlp), kept for resume."""
        path = self.partial_dir / f"{_digest(key)}.work"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_pinned(self, key: str) -> bool:
        """Whether a job of this process uses ``key``."""
        return _digest(key) in self._pins

    # -------------------------------------------------------------- filling

    async def get_or_create(
        self,
        key: str,
        create: Callable[[], Awaitable[Path]],
        *,
        pins: PinSet | None = None,
        expected_size: int | None = None,
        name: str = "",
    ) -> Path:
        """The entry for ``key``, calling ``create()`` to produce it when it is missing.

        ``create`` must return a complete, verified file inside this cache's partial folder
        (:meth:`partial_path` / :meth:`work_dir`); it is moved into place atomically, named with
        the extension of ``name`` or of the file. Only one ``create`` per key runs at a time,
        across tasks and processes; the others wait and reuse its result. With ``pins`` the
        entry stays pinned until the pin set is released; without, the path is only
        guaranteed until the next eviction. ``expected_size`` makes a cached entry of another
        size count as missing (a damaged file).
        """
        digest = _digest(key)
        slot = self._key_locks.setdefault(digest, [asyncio.Lock(), 0])
        slot[1] += 1
        try:
            async with slot[0]:
                path = await self._get_or_create_locked(digest, create, pins, expected_size, name)
        finally:
            slot[1] -= 1
            if slot[1] == 0:
                del self._key_locks[digest]
        await asyncio.to_thread(self.make_room, 0, keep=digest)
        return path

    async def _get_or_create_locked(
        self,
        digest: str,
        create: Callable[[], Awaitable[Path]],
        pins: PinSet | None,
        expected_size: int | None,
        name: str,
    ) -> Path:
        fetch_lock = await _FileLock.acquire(self._lock_path(digest, "fetch"), exclusive=True)
        try:
            path = self._find(digest)
            if path is not None and expected_size is not None:
                if path.stat().st_size != expected_size:
                    log.warning("cached %s has the wrong size; fetching it again", path.name)
                    path.unlink()
                    path = None
            if path is None:
                await asyncio.to_thread(self.make_room, expected_size or 0)
                produced = await create()
                path = self._insert(digest, produced, name or produced.name)
            if pins is not None:
                await pins._add(digest)
            _touch(path)
            return path
        finally:
            fetch_lock.release()

    def pin_set(self) -> PinSet:
        """A set of pins for one job: entries added by :meth:`get_or_create` stay until
        :meth:`PinSet.release` (or the end of a ``with`` block)."""
        return PinSet(self)

    # -------------------------------------------------------------- eviction

    def make_room(self, need_bytes: int = 0, *, keep: str | None = None) -> int:
        """Evict least recently used, unpinned entries until ``need_bytes`` more fit under the
        bound. Returns the bytes freed. Pinned entries (and the digest ``keep``, just fetched
        for a caller) are skipped, so the bound is exceeded while running jobs need more than
        it allows."""
        entries = self.entries()
        total = sum(e.size for e in entries)
        freed = 0
        for entry in entries:
            if total + need_bytes <= self.max_bytes:
                break
            if entry.digest in self._pins or entry.digest == keep:
                continue
            if self._evict(entry):
                total -= entry.size
                freed += entry.size
        if total + need_bytes > self.max_bytes:
            log.info(
                "media cache holds %d bytes in use, over its %d byte bound; it shrinks "
                "when the jobs using them finish",
                total,
                self.max_bytes,
            )
        return freed

    def _evict(self, entry: CacheEntry) -> bool:
        fetch = _FileLock.try_acquire(self._lock_path(entry.digest, "fetch"), exclusive=True)
        if fetch is None:
            return False  # being fetched or checked right now
        use = None
        try:
            use = _FileLock.try_acquire(self._lock_path(entry.digest, "use"), exclusive=True)
            if use is None:
                return False  # a job (maybe in another process) is using it
            try:
                entry.path.unlink()
            except FileNotFoundError:
                pass
            except PermissionError:
                return False  # Windows: open in another process
            log.info("evicted %s (%d bytes) from the media cache", entry.path.name, entry.size)
            return True
        finally:
            if use is not None:
                use.release(delete=True)
            fetch.release(delete=use is not None)

    # -------------------------------------------------------------- internals

    def _lock_path(self, digest: str, kind: str) -> Path:
        return self.lock_dir / f"{digest}.{kind}"

    def _scan(self) -> list[CacheEntry]:
        found = []
        with os.scandir(self.data_dir) as it:
            for item in it:
                if item.name.startswith("."):
                    continue  # a temporary name
                try:
                    st = item.stat()
                except FileNotFoundError:
                    continue  # evicted meanwhile
                found.append(
                    CacheEntry(
                        digest=item.name.split(".", 1)[0],
                        path=Path(item.path),
                        size=st.st_size,
                        last_used=st.st_mtime,
                    )
                )
        return found

    def _find(self, digest: str) -> Path | None:
        for entry in self._scan():
            if entry.digest == digest:
                return entry.path
        return None

    def _insert(self, digest: str, produced: Path, name: str) -> Path:
        dest = self.data_dir / f"{digest}{_suffix(name) or _suffix(produced.name)}"
        try:
            os.replace(produced, dest)
        except OSError as exc:
            raise CacheError(f"cannot store {name} in the media cache {self.root}: {exc}") from exc
        work = self.partial_dir / f"{digest}.work"
        if work.is_dir():
            shutil.rmtree(work, ignore_errors=True)
        return dest

    async def _pin(self, digest: str) -> None:
        if digest in self._pins:
            lock, count = self._pins[digest]
            self._pins[digest] = (lock, count + 1)
            return
        lock = await _FileLock.acquire(self._lock_path(digest, "use"), exclusive=False)
        self._pins[digest] = (lock, 1)

    def _unpin(self, digest: str) -> None:
        lock, count = self._pins[digest]
        if count > 1:
            self._pins[digest] = (lock, count - 1)
        else:
            del self._pins[digest]
            lock.release()

    def _drop_stale_partials(self) -> None:
        cutoff = time.time() - STALE_PARTIAL_S
        with os.scandir(self.partial_dir) as it:
            for item in it:
                try:
                    if item.stat().st_mtime >= cutoff:
                        continue
                    if item.is_dir():
                        shutil.rmtree(item.path, ignore_errors=True)
                    else:
                        os.unlink(item.path)
                except OSError:
                    continue


class PinSet:
    """The cache entries one job uses; released together when the job ends."""

    def __init__(self, cache: MediaCache) -> None:
        self._cache = cache
        self._digests: list[str] = []

    async def _add(self, digest: str) -> None:
        await self._cache._pin(digest)
        self._digests.append(digest)

    def __len__(self) -> int:
        return len(self._digests)

    def release(self) -> None:
        """Unpin every entry of this set; they become evictable (least recently used last)."""
        digests, self._digests = self._digests, []
        for digest in digests:
            self._cache._unpin(digest)

    def __enter__(self) -> PinSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _touch(path: Path) -> None:
    """Mark an entry as just used (its mtime is the LRU clock)."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)
