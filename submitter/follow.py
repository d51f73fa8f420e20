"""``--wait``: follow submitted jobs until each one is finished, saying what happens to each, and
download every rendered video as it succeeds."""

from __future__ import annotations

import re
import time
from pathlib import Path

from submitter.board_client import BoardClient, BoardError
from submitter.progress import ProgressBar, human_bytes
from submitter.submission import Entry
from wire import ACTIVE_STATES, FINAL_STATES, JobView

_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")


def output_name(job: JobView) -> str:
    """``<title>-<job id>.mp4``, safe on any filesystem."""
    slug = _UNSAFE.sub("-", job.title).strip("-.")[:60] or "job"
    return f"{slug}-{job.id}.mp4"


def follow_jobs(
    board: BoardClient,
    entries: list[Entry],
    *,
    out_dir: Path | None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> bool:
    """Poll until every job is final (True) or ``timeout_s`` passed (False). Notes each state
    change above an overall progress bar; downloads outputs into ``out_dir`` (None: don't)."""
    tracked = [e for e in entries if e.job is not None]
    if not tracked:
        return True
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar("rendering", len(tracked))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen: dict[str, str] = {}  # job id -> what was last said about it
    first_round = True  # the submit answers are fresh: no need to read them again
    try:
        while True:
            for entry in tracked:
                if not first_round and entry.job.state not in FINAL_STATES:
                    entry.job = board.job(entry.job.id)
                key = _change_key(entry.job)
                if seen.get(entry.job.id) != key:
                    seen[entry.job.id] = key
                    _say_change(bar, entry)
                wanted = out_dir is not None and entry.saved is None and entry.error is None
                if entry.job.state == "succeeded" and wanted:
                    _download(board, entry, out_dir, bar)
            first_round = False
            finished = [e for e in tracked if e.job.state in FINAL_STATES]
            running = sum(e.job.progress for e in tracked if e.job.state not in FINAL_STATES)
            bar.update(len(finished) + running * 0.99, _counts(tracked))
            if len(finished) == len(tracked):
                return True
            if deadline is not None and time.monotonic() > deadline:
                bar.note(f"gave up waiting after {timeout_s:g} s; the jobs go on on the board")
                return False
            time.sleep(poll_s)
    finally:
        bar.close()


def _change_key(job: JobView) -> str:
    return f"{job.state}|{job.stage}|{job.farmhand}|{job.attempts}"


def _say_change(bar: ProgressBar, entry: Entry) -> None:
    job = entry.job
    what = job.state
    if job.state in ACTIVE_STATES:
        what = f"{job.stage or job.state} on {job.farmhand or '?'}"
        if job.attempts > 1:
            what += f" (attempt {job.attempts}/{job.max_attempts})"
    elif job.state == "queued" and job.attempts:
        what = f"queued again after attempt {job.attempts}" + (
            f": {job.error}" if job.error else ""
        )
    elif job.state == "succeeded" and job.output is not None:
        what = f"succeeded: {job.output.duration_s:.1f} s, {human_bytes(job.output.size)}"
        if job.encoder:
            what += f", {job.encoder} on {job.farmhand}"
    elif job.state in ("failed", "cancelled") and job.error:
        what = f"{job.state}: {job.error}"
    bar.note(f"{job.id}  {entry.title[:40]}: {what}")


def _download(board: BoardClient, entry: Entry, out_dir: Path, bar: ProgressBar) -> None:
    job = entry.job
    assert job is not None and job.output is not None
    dest = out_dir / output_name(job)
    if dest.exists() and dest.stat().st_size == job.output.size:
        entry.saved = dest  # a re-run: downloaded before (same size, written atomically)
        return
    try:
        entry.saved = board.download_output(job, dest)
    except BoardError as exc:
        entry.error = exc.message
        bar.note(f"{job.id}  {entry.title[:40]}: download failed: {exc.message}")
        return
    bar.note(f"{job.id}  saved {dest}")


def _counts(tracked: list[Entry]) -> str:
    """``2 running (Week 47 45%, Week 48 10%), 1 queued, 3 succeeded``."""
    by_state: dict[str, int] = {}
    for entry in tracked:
        by_state[entry.job.state] = by_state.get(entry.job.state, 0) + 1
    order = ("running", "claimed", "queued", "succeeded", "failed", "cancelled")
    parts = [f"{by_state[s]} {s}" for s in order if by_state.get(s)]
    running = [e for e in tracked if e.job.state == "running"][:3]
    if running and parts:
        shown = ", ".join(f"{e.title[:20]} {e.job.progress * 100:.0f}%" for e in running)
        parts[0] += f" ({shown}{', ...' if by_state['running'] > 3 else ''})"
    return ", ".join(parts)
