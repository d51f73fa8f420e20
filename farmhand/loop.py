"""The farmhand's main loop: a small set of named states.

    probing → (paused ⇄ claiming) → running jobs in free slots → stopping

- **probing**: verify what this PC can encode (cached), announce it to the board.
- **paused**: the owner is using the PC (a named game runs, CPU/GPU busy, outside the schedule):
  no claims; the board is told why, and again every little while so it shows us online.
- **claiming**: one long-poll claim at a time while a slot is free; it is cancelled the moment the
  owner comes back or a stop is asked for.
- **stopping** (SIGTERM/SIGINT): stop claiming, kill the renders, release the jobs (the board
  requeues them at once), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import time

from farmhand.cache import MediaCache
from farmhand.client import BoardClient, BoardError, BoardUnreachable
from farmhand.config import FarmhandConfig
from farmhand.owner import OwnerGate
from farmhand.probe import invalidate, probe_capabilities
from farmhand.runner import JobRunner, Outcome
from wire import Capabilities

log = logging.getLogger("farmhand")

GATE_INTERVAL_S = 1.0
STATUS_EVERY_S = 15.0  # while paused: keep the board's "last seen" fresh
MAX_BACKOFF_S = 30.0


class Farmhand:
    def __init__(self, config: FarmhandConfig) -> None:
        self.config = config
        self.client = BoardClient(config.board_url, config.require_token(), name=config.name)
        self.cache = MediaCache(config.cache_dir, config.cache_max_bytes)
        self.gate = OwnerGate(config)
        self.workroot = config.state_dir / "work"
        self.capabilities: Capabilities | None = None
        self.slots = 1
        self.runners: dict[str, JobRunner] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.paused_reason: str | None = None
        self.stopping = asyncio.Event()
        self.changed = asyncio.Event()  # pause state, a finished job or a stop: look again
        self.exit_code = 0
        self._reprobe: asyncio.Future | None = None

    # ------------------------------------------------------------ states

    async def run(self) -> int:
        self._install_signal_handlers()
        shutil.rmtree(self.workroot, ignore_errors=True)  # leftovers of a crash
        self.workroot.mkdir(parents=True, exist_ok=True)
        await self._probe()
        gate = asyncio.create_task(self._watch_owner(), name="owner-gate")
        try:
            await self._announce()
            await self._claim_while_running()
        finally:
            gate.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gate
            await self._stop_jobs()
            await self.client.aclose()
        log.info("farmhand %s stopped", self.config.name)
        return self.exit_code

    async def _probe(self, *, fresh: bool = False) -> None:
        self.capabilities = await asyncio.to_thread(
            probe_capabilities, self.config, use_cache=not fresh
        )
        self.slots = self.config.slots or self.capabilities.slots
        self.capabilities.slots = self.slots
        log.info(
            "farmhand %s: encoders %s, %d slot(s)",
            self.config.name,
            ", ".join(self.capabilities.encoders) or "none",
            self.slots,
        )

    async def _announce(self) -> None:
        """Tell the board we exist (and whether we are paused), retrying until it answers."""
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                reply = await self.client.status(
                    paused=self.paused_reason is not None,
                    reason=self.paused_reason or "",
                    capabilities=self.capabilities,
                )
                if reply.state != "active":
                    log.warning("the board has this farmhand %s: %s", reply.state, reply.reason)
                return
            except BoardUnreachable as exc:
                log.warning("board not reachable yet (%s); retrying in %.0f s", exc, backoff)
            except BoardError as exc:
                self._fatal(exc)
                return
            await self._sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def _claim_while_running(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            if self.paused_reason is not None or len(self.runners) >= self.slots:
                self.changed.clear()
                await self._wait_for_change(STATUS_EVERY_S)
                continue
            claim = asyncio.create_task(
                self.client.claim(
                    self.capabilities, wait_s=self.config.wait_s, running=list(self.runners)
                ),
                name="claim",
            )
            self.changed.clear()
            interrupt = asyncio.create_task(self.changed.wait())
            done, _ = await asyncio.wait({claim, interrupt}, return_when=asyncio.FIRST_COMPLETED)
            interrupt.cancel()
            if claim not in done:
                # The owner is back or we are stopping: never start a job we'd have to abandon.
                claim.cancel()
                with contextlib.suppress(asyncio.CancelledError, BoardError):
                    await claim
                continue
            try:
                granted = claim.result()
            except BoardUnreachable as exc:
                log.warning("claim failed: %s; retrying in %.0f s", exc, backoff)
                await self._sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            except BoardError as exc:
                self._fatal(exc)
                return
            backoff = 1.0
            if granted is not None:
                self._start(granted)

    def _start(self, claim) -> None:
        runner = JobRunner(
            claim, client=self.client, cache=self.cache, workroot=self.workroot,
            verified_encoders=list(self.capabilities.encoders),
            max_download_bytes=self.config.max_download_bytes,
            download_concurrency=self.config.download_concurrency, ffmpeg=self.config.ffmpeg,
            on_hardware_failure=self._hardware_failed,
        )  # fmt: skip
        self.runners[claim.job_id] = runner
        log.info("claimed job %s", claim.job_id)
        task = asyncio.create_task(runner.run(), name=f"run-{claim.job_id}")
        self.tasks[claim.job_id] = task
        task.add_done_callback(lambda t, job_id=claim.job_id: self._finished(job_id, t))

    def _finished(self, job_id: str, task: asyncio.Task) -> None:
        self.runners.pop(job_id, None)
        self.tasks.pop(job_id, None)
        if task.cancelled():
            log.warning("job %s: runner cancelled", job_id)
        elif task.exception() is not None:
            log.error("job %s: runner crashed", job_id, exc_info=task.exception())
        else:
            outcome: Outcome = task.result()
            log.info("job %s: %s", job_id, outcome.value)
        self.changed.set()

    def _hardware_failed(self, encoder: str) -> None:
        """A verified hardware encoder failed at run time: re-probe before trusting it again."""
        log.warning("%s failed at run time; re-probing this PC's encoders", encoder)
        invalidate(self.config)
        self._reprobe = asyncio.ensure_future(self._probe(fresh=True))

    # ------------------------------------------------------------ the owner

    async def _watch_owner(self) -> None:
        """Check the owner every second; tell the board when that changes, and keep telling it
        while paused (claims are what keep an active farmhand's "last seen" fresh)."""
        last_status = time.monotonic()
        while True:
            reason = await asyncio.to_thread(self.gate.check)
            now = time.monotonic()
            changed = reason != self.paused_reason
            if changed:
                log.info("%s", reason or "the owner is away: claiming again")
                self.paused_reason = reason
                self.changed.set()
                if reason is not None:
                    self._give_back_pieces(reason)
            if changed or (reason is not None and now - last_status >= STATUS_EVERY_S):
                with contextlib.suppress(BoardError):
                    await self.client.status(
                        paused=reason is not None,
                        reason=reason or "",
                        capabilities=None,
                        deadline_s=5.0,
                    )
                last_status = now
            await asyncio.sleep(GATE_INTERVAL_S)

    def _give_back_pieces(self, reason: str) -> None:
        """The owner is back: a piece of a split job goes back to the board at once (not
        counted against it) for another farmhand, so the job loses at most that piece's work;
        a whole job carries on at idle priority."""
        for runner in list(self.runners.values()):
            if runner.kind != "render":
                log.info("job %s (%s): giving it back, %s", runner.job_id, runner.kind, reason)
                runner.release(f"the owner needs the PC: {reason}")

    # ------------------------------------------------------------ stopping

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: releasing %d job(s)", len(self.runners))
        self.stopping.set()
        self.changed.set()

    async def _stop_jobs(self) -> None:
        for runner in list(self.runners.values()):
            runner.release()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=20)

    def _fatal(self, exc: BoardError) -> None:
        if exc.status in (401, 403):
            log.error("the board refuses this farmhand: %s", exc)
            self.exit_code = 3
        else:
            log.error("board error: %s", exc)
            self.exit_code = 1
        self.stop()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self.stop))

    async def _wait_for_change(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


async def run_farmhand(config: FarmhandConfig) -> int:
    """Run a farmhand until SIGTERM/SIGINT; returns the process exit code."""
    return await Farmhand(config).run()
