"""Wake-ups: "there may be work" for long-polling claimers, "this job changed" for SSE streams.

They are in-process, and hints, never the source of truth: a woken claimer re-runs the claim query, an SSE stream
re-reads the job. Claimers wait in a queue and are woken a few at a time — as many as there are
new jobs — so one submit does not send a thousand idle farmhands to the database at once. What a
hint can miss (a job submitted through a board on another host, a retry whose backoff ran out)
is found by the reaper's nudge (``reaper.nudge_waiting_claimers``), one cheap query a second per
process: a missed hint costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Signal:
    """A broadcast edge: ``wait()`` returns when ``fire()`` is called after it began (or on
    timeout). Cheap for thousands of waiters: one Event per generation."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def arm(self) -> asyncio.Event:
        """The event the next ``fire()`` sets: take it *before* looking for work, then wait on
        it with ``wait_armed`` so a fire between the look and the wait is not missed."""
        return self._event

    async def wait(self, timeout: float) -> bool:
        """True when fired, False on timeout."""
        return await wait_armed(self._event, timeout)


async def wait_armed(event: asyncio.Event, timeout: float) -> bool:
    """Wait for an armed event; True when set, False on timeout."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


class WaitQueue:
    """Long-polling claimers, oldest first; ``wake(n)`` wakes the n who waited longest."""

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Event] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def arm(self) -> asyncio.Event:
        """Join the queue *before* looking for work, then wait on the event with
        ``wait_armed``: a wake between the look and the wait is not missed. ``leave`` after."""
        event = asyncio.Event()
        self._waiting.append(event)
        return event

    def leave(self, event: asyncio.Event) -> None:
        try:
            self._waiting.remove(event)
        except ValueError:
            pass  # already woken (wake pops it)

    def wake(self, n: int = 1) -> None:
        while n > 0 and self._waiting:
            event = self._waiting.popleft()
            if not event.is_set():
                event.set()
                n -= 1

    def wake_all(self) -> None:
        self.wake(len(self._waiting))


class JobFeed:
    """Per-job change notifications plus a farm-wide one (the dashboard's live view)."""

    def __init__(self) -> None:
        self.work = WaitQueue()  # claimers waiting for a job to become claimable
        self.any_change = Signal()
        self._jobs: dict[str, Signal] = {}
        self._listeners: dict[str, int] = {}

    def job_changed(self, job_id: str) -> None:
        signal = self._jobs.get(job_id)
        if signal is not None:
            signal.fire()
        self.any_change.fire()

    def work_available(self, jobs: int = 1) -> None:
        """``jobs`` became claimable (submitted, requeued, released, retried): wake as many
        waiting claimers."""
        self.work.wake(jobs)

    def farm_changed(self, *, wake_all: bool = False) -> None:
        """Something farm-wide changed (a farmhand's state): the dashboard re-reads;
        ``wake_all`` sends every waiting claimer to look again (a farmhand resumed or revoked)."""
        self.any_change.fire()
        if wake_all:
            self.work.wake_all()

    async def wait_job(self, job_id: str, timeout: float) -> bool:
        signal = self._jobs.setdefault(job_id, Signal())
        self._listeners[job_id] = self._listeners.get(job_id, 0) + 1
        try:
            return await signal.wait(timeout)
        finally:
            self._listeners[job_id] -= 1
            if self._listeners[job_id] == 0:
                del self._listeners[job_id]
                self._jobs.pop(job_id, None)
