"""One claimed job, start to end: context → fetch → render → upload → complete.

A job is a whole compilation (``render``) or a piece of one the board split across farmhands
(docs/architecture.md, "Split render"): a run of its video segments (``part``, encoded with the
encoder the split names), its audio track (``audio``), or the ``join`` of the pieces. The steps
are the same for each; only what is fetched and what is rendered differ.

A heartbeat task runs beside the steps for the whole job, carrying the stage and progress. When
the board answers ``cancel: true`` or 409 (lease gone) the job is aborted at once: the render's
cancel event kills every ffmpeg it started, downloads are cancelled, the work folder is removed,
and nothing more is said to the board about it. Failures are classified for the board:
permanent (the input is at fault: fail now) or retryable (try again, preferably elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from farmhand.cache import MediaCache, PinSet
from farmhand.client import BoardClient, BoardError, LeaseLost, sha256_of
from farmhand.fetch import FetchError, FetchLeaseLost, board_headers, fetch_all
from timeline.encoders import choose_encoders
from timeline.errors import EncoderError, PermanentRenderError, RenderCancelled, RenderError
from timeline.probe import MediaInfo
from timeline.progress import Progress
from timeline.render import RenderResult, render
from timeline.spec import Source, SpecError
from timeline.split import Part, join_parts, render_audio, render_part
from wire import Claim, Complete, Fail, Heartbeat, JobContext, MediaRef, Piece, Release

log = logging.getLogger("farmhand.runner")

# How long to keep trying to hand in a finished render while the board is unreachable. The
# board's lease decides whether the result still counts; we only stop trying when it says so.
HAND_IN_DEADLINE_S = 3600.0


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # reported to the board (retryable or not)
    CANCELLED = "cancelled"  # the board cancelled it
    LEASE_LOST = "lease lost"  # the board gave it to someone else
    RELEASED = "released"  # we gave it back (shutting down)


class JobAborted(Exception):
    """The job must stop now; ``outcome`` says why."""

    def __init__(self, outcome: Outcome, why: str) -> None:
        super().__init__(why)
        self.outcome = outcome


@dataclass
class JobState:
    """What the heartbeat reports, updated by the steps (from threads, hence plain fields)."""

    stage: str = "fetching"
    progress: float = 0.0
    fps: float | None = None
    speed: float | None = None
    eta_s: float | None = None
    message: str | None = None
    abort: JobAborted | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class JobRunner:
    """Runs one claimed job; ``run()`` returns its Outcome."""

    def __init__(
        self,
        claim: Claim,
        *,
        client: BoardClient,
        cache: MediaCache,
        workroot: Path,
        verified_encoders: list[str],
        max_download_bytes: int,
        download_concurrency: int,
        ffmpeg: str,
        on_hardware_failure=None,
        parallel: int = 2,
    ) -> None:
        self.claim = claim
        self.job_id = claim.job_id
        self.lease = claim.lease_token
        self.client = client
        self.cache = cache
        self.workroot = workroot
        self.verified = verified_encoders
        self.max_download_bytes = max_download_bytes
        self.download_concurrency = download_concurrency
        self.ffmpeg = ffmpeg
        self.on_hardware_failure = on_hardware_failure
        self.parallel = parallel
        self.state = JobState()
        self.kind = "render"  # what the context says this job is, once it is read
        self.shutting_down = False
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------ control from outside

    def release(self, why: str = "farmhand shutting down") -> None:
        """Stop the job and give it back to the board (SIGTERM, or the owner came back during a
        piece of a split job): requeued at once."""
        self._abort(JobAborted(Outcome.RELEASED, why))

    def _abort(self, abort: JobAborted) -> None:
        if self.state.abort is None:
            self.state.abort = abort
        self.state.cancel.set()
        if self._task is not None and self.state.stage in ("fetching", "uploading"):
            self._task.cancel()  # downloads and uploads are async: cancel them directly

    # ------------------------------------------------------------ the job

    async def run(self) -> Outcome:
        workdir = Path(tempfile.mkdtemp(prefix=f"{self.job_id}.", dir=self.workroot))
        beat = asyncio.create_task(self._heartbeats(), name=f"heartbeat-{self.job_id}")
        pins = PinSet(self.cache)
        try:
            self._task = asyncio.create_task(self._steps(workdir, pins), name=f"job-{self.job_id}")
            try:
                return await self._task
            except asyncio.CancelledError:
                if self.state.abort is None:
                    raise
                return await self._after_abort()
        except JobAborted as abort:
            self.state.abort = self.state.abort or abort
            return await self._after_abort()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            pins.release()
            shutil.rmtree(workdir, ignore_errors=True)

    async def _after_abort(self) -> Outcome:
        abort = self.state.abort
        log.info("job %s: %s (%s)", self.job_id, abort.outcome.value, abort)
        if abort.outcome is Outcome.RELEASED:
            with contextlib.suppress(BoardError):
                await self.client.release(
                    self.job_id, Release(lease_token=self.lease, reason=str(abort))
                )
        return abort.outcome

    async def _steps(self, workdir: Path, pins: PinSet) -> Outcome:
        try:
            context = await self.client.context(self.job_id, self.lease)
            self.kind = context.kind
            self._set(stage="fetching", progress=0.0)
            paths = await self._fetch(context, pins)
            self._check()
            result = await self._render(context, paths, workdir)
            self._set(stage="uploading", progress=0.97, eta_s=None, fps=None, speed=None)
            sha = await asyncio.to_thread(sha256_of, result.path)
            # the output goes where the context says (a path on the board, or storage elsewhere)
            await self.client.upload_output(
                self.job_id, self.lease, result.path, sha256=sha, url=context.output_url,
                deadline_s=HAND_IN_DEADLINE_S,
            )  # fmt: skip
            thumbnail = getattr(result, "thumbnail", None)
            if thumbnail is not None and thumbnail.exists():
                with contextlib.suppress(BoardError):  # a missing thumbnail fails no job
                    await self.client.upload_thumbnail(
                        self.job_id, self.lease, thumbnail, url=context.thumbnail_url
                    )
            self._set(stage="completing", progress=1.0)
            await self.client.complete(
                self.job_id,
                Complete(lease_token=self.lease, encoder=getattr(result, "encoder", ""),
                         render_s=result.render_s, stderr_tail=result.stderr_tail[-4000:]),
                deadline_s=HAND_IN_DEADLINE_S,
            )  # fmt: skip
            log.info(
                "job %s (%s): done in %.1f s (%s)",
                self.job_id,
                self.kind,
                result.render_s,
                getattr(result, "encoder", "") or "stream copy",
            )
            return Outcome.SUCCEEDED
        except (LeaseLost, FetchLeaseLost) as exc:
            raise JobAborted(Outcome.LEASE_LOST, str(exc)) from exc
        except RenderCancelled:
            if self.state.abort is not None:
                raise self.state.abort from None
            raise
        except JobAborted:
            raise
        except (FetchError, RenderError, SpecError, BoardError, OSError) as exc:
            if self.state.abort is not None:
                raise self.state.abort from None
            return await self._report_failure(exc)

    async def _fetch(self, context: JobContext, pins: PinSet) -> dict[str, Path]:
        """What this job reads, as local files: the sources it renders from (a piece of a split
        job only those its piece reads), or for a join the pieces, by job id."""
        headers = board_headers(self.client.token, self.lease)
        if context.kind == "join":
            refs = {p.job_id: _piece_ref(p) for p in context.pieces}
            sources = [Source(media=job_id) for job_id in refs]
        else:
            refs = context.media
            wanted = set(context.sources) if context.sources is not None else None
            sources = [
                s for s in context.compilation.sources() if wanted is None or s.key in wanted
            ]
        return await fetch_all(
            sources, client=self.client.http, cache=self.cache, media=refs, headers=headers,
            pins=pins, max_bytes=self.max_download_bytes, concurrency=self.download_concurrency,
            ffmpeg=self.ffmpeg, on_progress=lambda f: self._set(progress=f * 0.05),
        )  # fmt: skip

    async def _render(self, context: JobContext, paths: dict[str, Path], workdir: Path):
        """Render what the job asks for into ``workdir``; a ``RenderResult``, ``PartResult`` or
        ``AudioResult`` (each has ``path``, ``render_s`` and ``stderr_tail``)."""
        self._set(stage="rendering", progress=0.05)
        common = {"progress": self._on_progress, "cancel": self.state.cancel, "workdir": workdir,
                  "nice": True}  # fmt: skip
        if context.kind == "part":
            if context.encoder not in self.verified:
                raise PermanentRenderError(
                    f"this part must be encoded with {context.encoder}, which this farmhand "
                    "has not verified"
                )
            part = msgspec.convert(context.part, Part)
            return await asyncio.to_thread(
                render_part, context.compilation, paths, part, workdir / "part.mp4",
                encoder=context.encoder, parallel=self.parallel, media=_probed(context, paths),
                **common,
            )  # fmt: skip
        if context.kind == "audio":
            return await asyncio.to_thread(
                render_audio, context.compilation, paths, workdir / "audio.m4a",
                media=_probed(context, paths), **common,
            )  # fmt: skip
        if context.kind == "join":
            videos = [p for p in context.pieces if p.part is not None]
            (audio,) = [p for p in context.pieces if p.part is None]
            return await asyncio.to_thread(
                join_parts, [msgspec.convert(p.part, Part) for p in videos],
                [paths[_piece_key(p)] for p in videos], paths[_piece_key(audio)],
                workdir / "output.mp4",
                thumbnail=workdir / "thumbnail.jpg", **common,
            )  # fmt: skip
        return await self._render_whole(context, paths, workdir)

    async def _render_whole(
        self, context: JobContext, paths: dict[str, Path], workdir: Path
    ) -> RenderResult:
        codec = context.compilation.output.codec
        candidates = choose_encoders(codec, context.requirements.encoder, self.verified)
        if not candidates:
            raise PermanentRenderError(
                f"this farmhand has no verified {context.requirements.encoder} encoder for {codec}"
            )
        for index, encoder in enumerate(candidates):
            out = workdir / "output.mp4"
            try:
                return await asyncio.to_thread(
                    render, context.compilation, paths, out, encoder=encoder.name,
                    progress=self._on_progress, cancel=self.state.cancel, workdir=workdir,
                    parallel=self.parallel, thumbnail=workdir / "thumbnail.jpg", nice=True,
                )  # fmt: skip
            except EncoderError as exc:
                if not encoder.hardware or index + 1 >= len(candidates):
                    raise
                log.warning(
                    "job %s: %s failed (%s); falling back to %s",
                    self.job_id,
                    encoder.name,
                    exc,
                    candidates[index + 1].name,
                )
                self._set(message=f"{encoder.name} failed, using {candidates[index + 1].name}")
                if self.on_hardware_failure is not None:
                    self.on_hardware_failure(encoder.name)
        raise AssertionError("the encoder loop always returns or raises")

    async def _report_failure(self, exc: Exception) -> Outcome:
        retryable = _is_retryable(exc)
        message = str(exc) or type(exc).__name__
        stderr = getattr(exc, "stderr_tail", "") or ""
        log.warning(
            "job %s failed (%s): %s",
            self.job_id,
            "will retry" if retryable else "permanent",
            message,
        )
        try:
            await self.client.fail(
                self.job_id,
                Fail(lease_token=self.lease, error=message[:5000], retryable=retryable,
                     stderr_tail=stderr[-8000:]),
                deadline_s=HAND_IN_DEADLINE_S,
            )  # fmt: skip
        except LeaseLost:
            return Outcome.LEASE_LOST
        return Outcome.FAILED

    # ------------------------------------------------------------ progress and heartbeats

    def _set(self, **values) -> None:
        for name, value in values.items():
            setattr(self.state, name, value)

    def _check(self) -> None:
        if self.state.abort is not None:
            raise self.state.abort

    def _on_progress(self, p: Progress) -> None:
        # rendering spans 5 %..95 % of the job; fetching and uploading share the rest
        self._set(progress=0.05 + 0.9 * p.fraction, fps=p.fps, speed=p.speed, eta_s=p.eta_s)

    async def _heartbeats(self) -> None:
        interval = max(0.2, self.claim.heartbeat_interval_s)
        while True:
            beat = Heartbeat(
                lease_token=self.lease,
                stage=self.state.stage,
                progress=min(1.0, max(0.0, self.state.progress)),
                fps=self.state.fps,
                speed=self.state.speed,
                eta_s=self.state.eta_s,
                message=self.state.message,
            )
            try:
                reply = await self.client.heartbeat(self.job_id, beat, deadline_s=interval)
                if reply.cancel:
                    self._abort(JobAborted(Outcome.CANCELLED, "cancelled on the board"))
                    return
            except LeaseLost as exc:
                self._abort(JobAborted(Outcome.LEASE_LOST, str(exc)))
                return
            except BoardError as exc:  # BoardUnreachable included
                # Keep rendering: the board may come back before the lease runs out.
                log.warning("job %s: heartbeat not delivered: %s", self.job_id, exc)
            await asyncio.sleep(interval)


def _piece_ref(piece: Piece) -> MediaRef:
    """A piece of a split job, to download as board media is downloaded (by job id)."""
    name = "audio.m4a" if piece.part is None else f"part-{piece.part['index']}.mp4"
    return MediaRef(id=piece.job_id, url=piece.url, size=piece.size, sha256=piece.sha256,
                    filename=name)  # fmt: skip


def _probed(context: JobContext, fetched: dict[str, Path]) -> dict[str, MediaInfo]:
    """The board's probes of the sources this piece does not read (it fetched only its own):
    the plan of the whole compilation needs every source's facts."""
    known = {f.name for f in dataclasses.fields(MediaInfo)}
    return {
        key: MediaInfo(path=Path(key), **{k: v for k, v in facts.items() if k in known})
        for key, facts in context.probes.items()
        if key not in fetched and known - {"path"} <= facts.keys()
    }


def _piece_key(piece: Piece) -> str:
    return Source(media=piece.job_id).key


def _is_retryable(exc: Exception) -> bool:
    if isinstance(exc, (PermanentRenderError, SpecError)):
        return False
    if isinstance(exc, FetchError):
        return exc.retryable
    return True  # network, disk, a refused upload, an encoder that failed: worth another try
