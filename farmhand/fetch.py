"""Getting a job's media onto this PC: board media over HTTP, web media through yt-dlp.

Board media (``GET {board}{ref.url}`` with the farmhand token and the lease token) is
downloaded with HTTP Range resume: a connection cut mid-file continues where it stopped. The
result must match the size and sha256 the board recorded; a mismatch deletes it and tries once
more from scratch (a transfer can be damaged), a second mismatch is permanent (the board's copy
is bad). Web media goes through yt-dlp as a library (a plain ``.mp4`` URL works through its
generic extractor): one video only, never a playlist, within a size limit. Everything lands in
the :class:`~farmhand.cache.MediaCache`, so a clip used by many jobs is fetched once.

Web media is a stranger's choice, fetched from inside the owner's home network. So every request
of a web download goes through a :class:`~farmhand.netguard.GuardedProxy`: public addresses
only, plus the networks the owner allows (``FARMHAND_ALLOW_NETWORKS``), checked at each redirect
and fragment, connected to as checked. yt-dlp uses its own HTTP downloaders only (never ffmpeg's,
which would not go through the proxy), and every file it downloads is probed with the render's
allow-lists and caps (``timeline.probe``) before anything else opens it: a playlist that would
make ffmpeg read the PC's own files, or a picture over the pixel cap, fails the job for good.
Board media comes from the board's own address (often on the LAN) and is not subject to this.

Errors are typed for the job runner: :class:`FetchPermanentError` (the input is at fault: fail
the job), :class:`FetchTransientError` (try again later, maybe elsewhere) and
:class:`FetchLeaseLost` (the board no longer lets us work on this job: abort).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from farmhand.cache import MediaCache, PinSet, key_for_sha256, key_for_url
from farmhand.netguard import AddressPolicy, GuardedProxy, Refusal, installed_policy
from timeline.inputs import media_input_options
from timeline.probe import MAX_PIXELS, MAX_STREAMS, ProbeError, probe
from timeline.spec import Source
from wire import LEASE_HEADER, MediaRef

log = logging.getLogger(__name__)

BOARD_ATTEMPTS = 5  # per board file: connection cuts and 5xx are retried, resuming
URL_ATTEMPTS = 3  # per web URL: network trouble is retried


class FetchError(Exception):
    """Media could not be fetched; ``str()`` is written for the dashboard and names the source."""

    retryable = True

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class FetchTransientError(FetchError):
    """Worth trying again later or on another farmhand (network, board busy, damaged transfer)."""

    retryable = True


class FetchPermanentError(FetchError):
    """The source itself is at fault (gone, not a video, a playlist, too big): fail the job."""

    retryable = False


class AddressRefused(FetchPermanentError):
    """A web source (or a redirect or fragment of it) leads to an address this farmhand does not
    fetch from: the owner's network, the PC itself (see farmhand.netguard)."""


class FetchLeaseLost(FetchError):
    """The board answered 409: this farmhand no longer holds the job. Abort without reporting."""

    retryable = False


class ChecksumMismatch(FetchTransientError):
    """The downloaded bytes do not match the board's size or sha256 (deleted; retried once)."""


def _on_board(client: httpx.AsyncClient, url: str) -> bool:
    """Whether ``url`` (a path, or an absolute URL) is on the board ``client`` talks to."""
    target = client.base_url.join(url)
    board = client.base_url
    return (target.scheme, target.host, target.port) == (board.scheme, board.host, board.port)


def board_headers(token: str, lease_token: str) -> dict[str, str]:
    """The headers of a media download for a job this farmhand holds."""
    return {"Authorization": f"Bearer {token}", LEASE_HEADER: lease_token}


# ---------------------------------------------------------------- board media


async def fetch_media(
    client: httpx.AsyncClient,
    ref: MediaRef,
    headers: Mapping[str, str],
    *,
    cache: MediaCache,
    pins: PinSet | None = None,
    max_bytes: int | None = None,
    attempts: int = BOARD_ATTEMPTS,
    on_bytes: Callable[[int], None] | None = None,
) -> Path:
    """Board media ``ref`` as a verified local file (from the cache when it is there).

    ``client`` carries the board's base URL (``ref.url`` is a path on it) or ``ref.url`` is
    absolute. Connection cuts and 5xx answers are retried ``attempts`` times with backoff, each
    resuming with a Range request. ``on_bytes`` is told how many new bytes arrived.
    Raises FetchPermanentError, FetchTransientError or FetchLeaseLost.
    """
    label = f"media {ref.id} ({ref.filename})"
    if max_bytes is not None and ref.size > max_bytes:
        raise FetchPermanentError(
            f"{label} is {_mb(ref.size)}, over this farmhand's download limit of {_mb(max_bytes)}",
            source=ref.id,
        )
    try:
        key = key_for_sha256(ref.sha256)
    except ValueError:
        raise FetchPermanentError(
            f"{label}: the board gave no valid sha256 for it", source=ref.id
        ) from None

    async def download() -> Path:
        return await _download_verified(
            client, ref, headers, cache.partial_path(key), attempts, label, on_bytes
        )

    return await cache.get_or_create(
        key, download, pins=pins, expected_size=ref.size, name=ref.filename
    )


async def _download_verified(
    client: httpx.AsyncClient,
    ref: MediaRef,
    headers: Mapping[str, str],
    part: Path,
    attempts: int,
    label: str,
    on_bytes: Callable[[int], None] | None,
) -> Path:
    mismatches = 0
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.2, max=10) + wait_random(0, 0.5),
            retry=retry_if_exception_type(
                (httpx.TransportError, _RetryableStatus, ChecksumMismatch)
            ),
            reraise=True,
        ):
            with attempt:
                try:
                    return await _download_resumable(client, ref, headers, part, label, on_bytes)
                except ChecksumMismatch as exc:
                    mismatches += 1
                    if mismatches >= 2:
                        raise FetchPermanentError(
                            f"{label} arrived twice with the wrong content ({exc}); the board's "
                            "copy is damaged: upload it again",
                            source=ref.id,
                        ) from None
                    log.warning("%s; downloading it again", exc)
                    raise
                except httpx.TransportError as exc:
                    have = _size(part)
                    log.warning(
                        "%s: connection broke at %d bytes (%s); resuming",
                        label,
                        have,
                        exc.__class__.__name__,
                    )
                    raise
    except ChecksumMismatch as exc:
        raise FetchTransientError(str(exc), source=ref.id) from None
    except _RetryableStatus as exc:
        raise FetchTransientError(
            f"{label}: the board answered {exc.status} {attempts} times; try again later",
            source=ref.id,
        ) from None
    except httpx.TransportError as exc:
        raise FetchTransientError(
            f"{label}: cannot download from the board ({exc.__class__.__name__}: {exc})",
            source=ref.id,
        ) from None
    raise AssertionError("unreachable: tenacity either returns or raises")


class _RetryableStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


async def _download_resumable(
    client: httpx.AsyncClient,
    ref: MediaRef,
    headers: Mapping[str, str],
    part: Path,
    label: str,
    on_bytes: Callable[[int], None] | None,
) -> Path:
    """One attempt: continue ``part`` from where it stopped, then verify it."""
    have = _size(part)
    if have > ref.size:
        _remove(part)
        have = 0
    digest = await asyncio.to_thread(_hash_prefix, part) if have else hashlib.sha256()
    if have < ref.size:
        # identity: the sha256 is of the stored bytes, and a Range counts stored bytes.
        request_headers = {**headers, "Accept-Encoding": "identity"}
        if have:
            request_headers["Range"] = f"bytes={have}-"
        if not _on_board(client, ref.url):  # a presigned URL elsewhere: the token stays home
            request_headers = {
                k: v for k, v in request_headers.items() if k.lower() != "authorization"
            }
        async with client.stream("GET", ref.url, headers=request_headers) as response:
            status = response.status_code
            if status == 206 and not _range_starts_at(response, have):
                status = 200  # a range we did not ask for: start over below
            if status == 200:
                have, digest = 0, hashlib.sha256()
                mode = "wb"
            elif status == 206:
                mode = "ab"
            elif status == 416 and have:
                _remove(part)  # our partial does not fit the file any more
                raise _RetryableStatus(416)
            else:
                _raise_for_status(status, label, ref.id)
            overflow = False
            with part.open(mode) as out:
                async for chunk in response.aiter_raw():
                    if have + len(chunk) > ref.size:
                        overflow = True
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    have += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            if overflow:
                _remove(part)
                raise ChecksumMismatch(
                    f"{label}: the board sent more than the {ref.size} bytes it announced",
                    source=ref.id,
                )
    if have < ref.size:
        # The body ended early without a protocol error: resume like after a cut.
        raise httpx.ReadError(f"body ended at {have} of {ref.size} bytes")
    if digest.hexdigest() != ref.sha256.lower():
        _remove(part)
        raise ChecksumMismatch(
            f"{label}: sha256 {digest.hexdigest()[:12]}... does not match the board's "
            f"{ref.sha256[:12]}...",
            source=ref.id,
        )
    return part


def _size(path: Path) -> int:
    """Bytes in a partial download so far (0 when there is none)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _hash_prefix(path: Path) -> Any:
    """sha256 of what a partial download already holds, to continue hashing after a resume."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest


def _range_starts_at(response: httpx.Response, offset: int) -> bool:
    content_range = response.headers.get("content-range", "")
    # "bytes 1000-1999/2000"
    try:
        unit, _, spec = content_range.partition(" ")
        return unit == "bytes" and int(spec.split("-", 1)[0]) == offset
    except ValueError:
        return False


def _raise_for_status(status: int, label: str, media_id: str) -> None:
    if status == 409:
        raise FetchLeaseLost(
            f"{label}: the board says this farmhand no longer holds the job", source=media_id
        )
    if status in (404, 410):
        raise FetchPermanentError(f"{label} is not on the board (HTTP {status})", source=media_id)
    if status == 429 or status >= 500:
        raise _RetryableStatus(status)
    # 401/403 and other refusals are about this farmhand's token or the board, not the media.
    raise FetchTransientError(
        f"{label}: the board refused the download (HTTP {status})", source=media_id
    )


# ---------------------------------------------------------------- web media (yt-dlp)


async def fetch_url(
    url: str,
    *,
    cache: MediaCache,
    pins: PinSet | None = None,
    max_bytes: int,
    ffmpeg: str = "ffmpeg",
    attempts: int = URL_ATTEMPTS,
    policy: AddressPolicy | None = None,
) -> Path:
    """Web media at ``url`` (a video page or a plain media file) as a local file.

    yt-dlp runs in a thread: one video (a playlist URL is refused), at most ``max_bytes``,
    video and audio merged into mp4 where the site offers separate streams. The cache key is the
    normalized URL. Network trouble is retried ``attempts`` times, yt-dlp resuming its partial
    file. Every connection must be to an address ``policy`` permits (default: the process's,
    :func:`farmhand.netguard.installed_policy`), and the file must be real media within the
    caps of ``timeline.probe``. Raises FetchPermanentError (unsupported URL, 404, not a video,
    a playlist, too big, :class:`AddressRefused`) or FetchTransientError, each naming the URL.
    """
    key = key_for_url(url)
    policy = policy if policy is not None else installed_policy()

    async def download() -> Path:
        work = cache.work_dir(key)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=1, max=20) + wait_random(0, 1),
                retry=retry_if_exception_type(FetchTransientError),
                reraise=True,
            ):
                with attempt:
                    return await _run_in_thread(url, work, max_bytes, ffmpeg, policy)
        except FetchTransientError as exc:
            log.warning("giving up on %s after %d attempts: %s", url, attempts, exc)
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")

    return await cache.get_or_create(key, download, pins=pins)


async def _run_in_thread(
    url: str, work: Path, max_bytes: int, ffmpeg: str, policy: AddressPolicy
) -> Path:
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(
            _ytdlp_download, url, work, max_bytes, ffmpeg, cancel, policy
        )
    except asyncio.CancelledError:
        cancel.set()  # the thread stops at yt-dlp's next progress report
        raise


class _Cancelled(Exception):
    pass


class _TooBig(Exception):
    pass


class _NotMedia(Exception):
    """A downloaded file that the render's probe refuses (a playlist, over a cap, unreadable)."""

    def __init__(self, error: ProbeError) -> None:
        super().__init__(error.message)
        self.error = error


# Where yt-dlp may download from: its own HTTP downloaders (through the proxy), HLS and DASH
# included. Not rtmp/rtsp/mms (external programs that ignore the proxy) nor ffmpeg's downloader.
_PROTOCOLS = "[protocol~='^(https?|m3u8(_native)?|http_dash_segments(_generator)?)$']"
_FORMAT = "/".join((
    f"bv*[ext=mp4]{_PROTOCOLS}+ba[ext=m4a]{_PROTOCOLS}", f"b[ext=mp4]{_PROTOCOLS}",
    f"bv*{_PROTOCOLS}+ba{_PROTOCOLS}", f"b{_PROTOCOLS}",
))  # fmt: skip


class _YtdlpLog:
    """Routes yt-dlp's messages to our log and remembers them for error messages."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _keep(self, msg: str) -> None:
        self.lines.append(msg)
        del self.lines[:-50]

    def debug(self, msg: str) -> None:
        self._keep(msg)
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        self.debug(msg)

    def warning(self, msg: str) -> None:
        self._keep(msg)
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        self._keep(msg)
        log.debug("yt-dlp: %s", msg)  # reported through the exception we raise


def _ytdlp_download(
    url: str,
    work: Path,
    max_bytes: int,
    ffmpeg: str,
    cancel: threading.Event,
    policy: AddressPolicy,
) -> Path:
    """Blocking: download one video into ``work`` with yt-dlp, every request through a
    :class:`GuardedProxy` for ``policy``; return the file, checked to be media."""
    with GuardedProxy(policy) as proxy:
        try:
            path = _ytdlp_download_through(url, work, max_bytes, ffmpeg, cancel, proxy.url)
        except FetchError as exc:
            # What yt-dlp made of the proxy's answer (HTTP 403, 502) says less than we know.
            if proxy.refusals:
                raise _refused(url, proxy.refusals) from None
            if proxy.failures and isinstance(exc, FetchTransientError):
                raise FetchTransientError(f"{url}: {proxy.failures[-1]}", source=url) from None
            raise
    _check_media(path, url)
    return path


def _ytdlp_download_through(
    url: str, work: Path, max_bytes: int, ffmpeg: str, cancel: threading.Event, proxy: str
) -> Path:
    import yt_dlp  # imported here: it is slow to import and only needed for web sources

    def progress(d: dict[str, Any]) -> None:
        if cancel.is_set():
            raise _Cancelled()
        done = d.get("downloaded_bytes") or 0
        if done > max_bytes:  # also when the server announces no size up front
            raise _TooBig()
        if d.get("status") == "finished" and d.get("filename"):
            # before yt-dlp's ffmpeg merges it: a playlist must not be opened by any ffmpeg
            try:
                probe(Path(d["filename"]), label=url)
            except ProbeError as exc:
                raise _NotMedia(exc) from None

    logger = _YtdlpLog()
    options: dict[str, Any] = {
        "outtmpl": str(work / "media.%(ext)s"),
        "paths": {"home": str(work), "temp": str(work)},
        "noplaylist": True,
        "format": _FORMAT,
        "merge_output_format": "mp4",
        "proxy": proxy,
        # yt-dlp's own downloaders for HLS and DASH: they go through the proxy, and never
        # hand a manifest to ffmpeg (which would follow file:// segments and skip the proxy).
        "external_downloader": {"default": "native"},
        # Where yt-dlp still would (an HLS feature its downloader lacks), ffmpeg may not open
        # any protocol: that download fails instead of leaving the guard.
        "external_downloader_args": {"ffmpeg_i": ["-protocol_whitelist", "none"]},
        # Merging separate video and audio: the render's allow-lists on each input.
        "postprocessor_args": {
            "merger+ffmpeg_i": media_input_options(max_pixels=MAX_PIXELS, max_streams=MAX_STREAMS)
        },
        "fixup": "never",  # the render re-encodes everything; no other ffmpeg pass is needed
        "max_filesize": max_bytes,
        # a path: yt-dlp takes a bare "ffmpeg" for a missing file and then cannot merge
        "ffmpeg_location": shutil.which(ffmpeg) or ffmpeg,
        "logger": logger,
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "progress_hooks": [progress],
        "continuedl": True,
        "overwrites": False,
        "retries": 3,
        "fragment_retries": 3,
        "extractor_retries": 1,
        "socket_timeout": 30,
        "extract_flat": "in_playlist",  # a playlist is seen as one, without visiting entries
        "writethumbnail": False,
        "writesubtitles": False,
        "cachedir": False,
        "color": {"stderr": "never", "stdout": "never"},
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=False)
            _refuse_unsuitable(url, info, max_bytes)
            info = ydl.process_ie_result(info, download=True)
    except _Cancelled:
        raise FetchTransientError(f"download of {url} was cancelled", source=url) from None
    except _TooBig:
        raise FetchPermanentError(
            f"{url} is larger than this farmhand's download limit of {_mb(max_bytes)}", source=url
        ) from None
    except _NotMedia as exc:
        raise FetchPermanentError(exc.error.message, source=url) from None
    except yt_dlp.utils.DownloadError as exc:
        if any("delegated to ffmpeg" in line for line in logger.lines):
            raise FetchPermanentError(
                f"{url}: this stream uses HLS features only ffmpeg's own downloader handles, and "
                "farmhands never let ffmpeg fetch from the network (it would bypass their "
                "address checks and could read local files); give a plain video address",
                source=url,
            ) from None
        raise _classify_ytdlp_error(url, exc) from None
    except yt_dlp.utils.YoutubeDLError as exc:
        raise _classify_ytdlp_error(url, exc) from None
    except OSError as exc:
        raise FetchTransientError(f"{url}: cannot write the download: {exc}", source=url) from None

    for download in info.get("requested_downloads") or []:
        path = download.get("filepath")
        if path and Path(path).is_file() and Path(path).stat().st_size > 0:
            return Path(path)
    if any("larger than max-filesize" in line for line in logger.lines):
        raise FetchPermanentError(
            f"{url} is larger than this farmhand's download limit of {_mb(max_bytes)}", source=url
        )
    raise FetchPermanentError(f"{url}: yt-dlp found no video to download", source=url)


def _check_media(path: Path, url: str) -> None:
    """The render's probe of a download, before it enters the cache: real media, within caps."""
    try:
        probe(path, label=url)
    except ProbeError as exc:
        raise FetchPermanentError(exc.message, source=url) from None


def _refused(url: str, refusals: list[Refusal]) -> AddressRefused:
    """One permanent error for a download the guard stopped. It names the host asked for (the
    submitter's URL, or where that URL's server sent us) but not what the host resolved to:
    that would tell a stranger what names mean inside the owner's network."""
    host = refusals[0].host
    try:
        ip_address(host)
        what = f"{host} is a private or local network address"
    except ValueError:
        what = f"{host} resolves to a private or local network address"
    if host != (urlsplit(url).hostname or ""):
        what = f"it leads to {host}, which {what.removeprefix(host + ' ')}"
    return AddressRefused(
        f"{url}: {what}; farmhands fetch clips from public internet addresses only (the PC's "
        "owner can allow a network with FARMHAND_ALLOW_NETWORKS)",
        source=url,
    )


def _refuse_unsuitable(url: str, info: dict[str, Any] | None, max_bytes: int) -> None:
    if not info:
        raise FetchPermanentError(f"{url}: yt-dlp found no video there", source=url)
    if info.get("_type") in ("playlist", "multi_video"):
        raise FetchPermanentError(
            f"{url} is a playlist or channel, not one video; give the address of a single video",
            source=url,
        )
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise FetchPermanentError(
            f"{url} is a live stream; only finished videos can be rendered", source=url
        )
    size = info.get("filesize") or info.get("filesize_approx")
    if size and size > max_bytes:
        raise FetchPermanentError(
            f"{url} is about {_mb(size)}, over this farmhand's download limit of {_mb(max_bytes)}",
            source=url,
        )
    if info.get("vcodec") == "none" and not info.get("formats"):
        raise FetchPermanentError(f"{url} has audio only, no video", source=url)


def _classify_ytdlp_error(url: str, exc: Exception) -> FetchError:
    """Permanent when the source is at fault (unsupported, gone, private), else transient."""
    from yt_dlp.networking.exceptions import HTTPError, RequestError, TransportError
    from yt_dlp.utils import ExtractorError, UnsupportedError

    # DownloadError keeps the original in exc_info; ExtractorError in exc_info or cause.
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain and len(chain) < 6:
        chain.append(cause)
        info = getattr(cause, "exc_info", None)
        inner = info[1] if isinstance(info, tuple) and len(info) > 1 else None
        cause = inner or getattr(cause, "cause", None) or cause.__cause__ or cause.__context__
        if not isinstance(cause, BaseException):
            cause = None
    for cause in chain:
        if isinstance(cause, UnsupportedError):
            return FetchPermanentError(
                f"{url} is not a video yt-dlp can read (no video found on that page)", source=url
            )
        if isinstance(cause, HTTPError):
            if cause.status in (401, 403, 404, 410, 451):
                return FetchPermanentError(
                    f"{url} cannot be downloaded: HTTP {cause.status} {cause.reason or ''}".strip(),
                    source=url,
                )
            return FetchTransientError(f"{url}: the site answered HTTP {cause.status}", source=url)
        if isinstance(cause, TransportError):
            return FetchTransientError(f"{url}: network error ({cause})", source=url)
        if isinstance(cause, RequestError):  # a request yt-dlp will not make, anywhere
            if "file://" in str(cause):
                return FetchPermanentError(
                    f"{url} refers to local files (file://), which farmhands never read",
                    source=url,
                )
            return FetchPermanentError(f"{url} cannot be fetched: {_short(str(cause))}", source=url)
    text = _short(str(exc))
    if "did not get any data blocks" in text.lower():
        # the server answered, with an empty body: asking again gets the same nothing
        return FetchPermanentError(f"{url} is an empty file (0 bytes)", source=url)
    # "expected" extractor errors are the site's answer (private, removed, geo-blocked).
    if any(isinstance(c, ExtractorError) and c.expected for c in chain):
        return FetchPermanentError(f"{url}: {text}", source=url)
    return FetchTransientError(f"{url}: {text}", source=url)


# ---------------------------------------------------------------- all of a job's sources


async def fetch_all(
    sources: Iterable[Source],
    *,
    client: httpx.AsyncClient,
    cache: MediaCache,
    media: Mapping[str, MediaRef],
    headers: Mapping[str, str],
    pins: PinSet | None = None,
    max_bytes: int,
    concurrency: int = 4,
    ffmpeg: str = "ffmpeg",
    on_progress: Callable[[float], None] | None = None,
    policy: AddressPolicy | None = None,
) -> dict[str, Path]:
    """Fetch every source of a job, ``concurrency`` at a time; ``{Source.key: local path}``.

    ``media`` maps board media ids to their :class:`wire.MediaRef` (``JobContext.media``).
    ``on_progress`` gets the fraction of sources done. ``policy`` limits where web sources may
    be fetched from (see :func:`fetch_url`). The first failure cancels the rest and is raised
    (FetchLeaseLost, FetchPermanentError or FetchTransientError).
    """
    unique = list({s.key: s for s in sources}.values())
    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def one(source: Source) -> Path:
        nonlocal done
        async with limit:
            if source.media is not None:
                ref = media.get(source.media)
                if ref is None:
                    raise FetchPermanentError(
                        f"media {source.media} is used by the job but the board did not "
                        "describe it",
                        source=source.media,
                    )
                path = await fetch_media(
                    client, ref, headers, cache=cache, pins=pins, max_bytes=max_bytes
                )
            elif source.url is not None:
                path = await fetch_url(
                    source.url, cache=cache, pins=pins, max_bytes=max_bytes, ffmpeg=ffmpeg,
                    policy=policy,
                )  # fmt: skip
            else:
                raise FetchPermanentError(
                    f"local path {source.path!r} cannot be rendered on a farmhand; upload it as "
                    "media or give a URL",
                    source=str(source.path),
                )
        done += 1
        if on_progress is not None:
            on_progress(done / len(unique))
        return path

    tasks = {s.key: asyncio.create_task(one(s)) for s in unique}
    try:
        await asyncio.gather(*tasks.values())
    except BaseException:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        raise
    return {key: task.result() for key, task in tasks.items()}


def _mb(size: int) -> str:
    return f"{size / 1024**2:.0f} MB" if size >= 1024**2 else f"{size} bytes"


def _short(text: str) -> str:
    text = text.removeprefix("ERROR: ").strip()
    return text if len(text) <= 300 else text[:297] + "..."
