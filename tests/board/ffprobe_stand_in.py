"""A stand-in ffprobe for tests of the board's probes: it records each run (and the
address-space limit it ran under), can be held at a gate, and runs the real ffprobe."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import psutil

REAL_FFPROBE = shutil.which(os.environ.get("FFPROBE_BINARY") or "ffprobe") or "ffprobe"


def gated_ffprobe(folder: Path) -> Path:
    """A stand-in ffprobe: logs ``start PID ULIMIT_V`` (its address-space limit in KiB, as the
    shell sees it), waits while ``$PROBE_GATE`` exists, runs the real ffprobe, logs ``end PID``.
    The log is ``$PROBE_LOG``."""
    script = folder / "ffprobe"
    script.write_text(
        "#!/bin/bash\n"
        'echo "start $$ $(ulimit -v)" >> "$PROBE_LOG"\n'
        'while [ -n "$PROBE_GATE" ] && [ -e "$PROBE_GATE" ]; do sleep 0.05; done\n'
        f'"{REAL_FFPROBE}" "$@"\n'
        "status=$?\n"
        'echo "end $$" >> "$PROBE_LOG"\n'
        "exit $status\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def ended(pid: int) -> bool:
    """Whether process ``pid`` is gone (or dead, waiting for whoever adopted it to reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def log_lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def most_at_once(log: Path) -> int:
    """The most probes that ran at the same time, from the start/end lines of the log."""
    running = peak = 0
    for words in log_lines(log):
        running += 1 if words[0] == "start" else -1
        peak = max(peak, running)
    return peak
