"""Running ffmpeg: which binary, progress from ``-progress pipe:1``, and cancellation.

Every ffmpeg starts in its own process group (its own session on POSIX) so cancelling kills the
whole tree, never the caller. What differs by platform (starting the group, killing the tree,
lowering priority) stays in the three small functions at the end of this module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence

from timeline.errors import RenderCancelled, RenderError
from timeline.progress import FfmpegReport, ProgressReader

STDERR_TAIL_LINES = 60
POLL_S = 0.1  # how often a running ffmpeg checks for cancellation


def ffmpeg_binary() -> str:
    """The ffmpeg to run: ``FFMPEG_BINARY`` or ``ffmpeg`` from PATH."""
    return os.environ.get("FFMPEG_BINARY") or "ffmpeg"


def ffprobe_binary() -> str:
    """The ffprobe to run: ``FFPROBE_BINARY`` or ``ffprobe`` from PATH."""
    return os.environ.get("FFPROBE_BINARY") or "ffprobe"


class FfmpegFailed(RenderError):
    """ffmpeg exited non-zero. ``returncode`` and ``stderr_tail`` say how; the caller decides
    whose fault it was (input, encoder, machine)."""

    def __init__(self, message: str, *, returncode: int, stderr_tail: str) -> None:
        super().__init__(message, stderr_tail=stderr_tail)
        self.returncode = returncode


def run_ffmpeg(
    args: Sequence[str],
    *,
    what: str,
    cancel: threading.Event | None = None,
    on_report: Callable[[FfmpegReport], None] | None = None,
    nice: bool = False,
    timeout_s: float | None = None,
) -> str:
    """Run ``ffmpeg <args>`` to completion and return its stderr tail.

    ``what`` names the step in messages ("segment 3 of 12"). ``on_report`` gets each progress
    block. When ``cancel`` is set, the process tree is killed within ``POLL_S`` and
    ``RenderCancelled`` is raised. Raises ``FfmpegFailed`` on a non-zero exit, ``RenderError`` when
    ffmpeg cannot be started or runs past ``timeout_s``.
    """
    argv = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning",
            "-progress", "pipe:1", *args]  # fmt: skip
    if nice:
        argv = _low_priority_prefix() + argv
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **_new_group_kwargs(),
        )
    except OSError as exc:
        raise RenderError(f"cannot start ffmpeg ({argv[0]}): {exc}") from exc

    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    readers = [
        threading.Thread(target=_read_progress, args=(proc, on_report), daemon=True),
        threading.Thread(target=_read_stderr, args=(proc, tail), daemon=True),
    ]
    for reader in readers:
        reader.start()
    waited = 0.0
    try:
        while True:
            try:
                proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                waited += POLL_S
            if cancel is not None and cancel.is_set():
                kill_tree(proc)
                raise RenderCancelled(f"{what}: cancelled")
            if timeout_s is not None and waited > timeout_s:
                kill_tree(proc)
                raise RenderError(f"{what}: ffmpeg ran over {timeout_s:.0f} s and was stopped",
                                  stderr_tail="\n".join(tail))  # fmt: skip
    except BaseException:
        kill_tree(proc)  # never leave an ffmpeg behind, whatever interrupted us
        raise
    finally:
        for reader in readers:
            reader.join(timeout=2)
    stderr_tail = "\n".join(tail)
    if proc.returncode != 0:
        if cancel is not None and cancel.is_set():
            raise RenderCancelled(f"{what}: cancelled")
        last = tail[-1] if tail else f"exit status {proc.returncode}"
        raise FfmpegFailed(f"{what}: ffmpeg failed: {last}", returncode=proc.returncode,
                           stderr_tail=stderr_tail)  # fmt: skip
    return stderr_tail


def _read_progress(proc: subprocess.Popen, on_report: Callable[[FfmpegReport], None] | None):
    reader = ProgressReader()
    assert proc.stdout is not None
    for raw in proc.stdout:
        report = reader.feed(raw.decode("utf-8", "replace"))
        if report is not None and on_report is not None:
            try:
                on_report(report)
            except Exception:  # a failing progress callback must not hang ffmpeg's pipe
                pass


def _read_stderr(proc: subprocess.Popen, tail: deque[str]) -> None:
    assert proc.stderr is not None
    for raw in proc.stderr:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            tail.append(line)


# ---------------------------------------------------------------- what differs by platform


def _new_group_kwargs() -> dict:
    """Popen arguments that put the child in its own process group, and on Linux make it die
    with the process that started it: a render whose farmhand was killed (kill -9, OOM) must not
    run on as an orphan, burning the owner's CPU for an output nobody will upload."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    if sys.platform.startswith("linux"):
        return {"start_new_session": True, "preexec_fn": _die_with_parent}
    return {"start_new_session": True}


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the spawning thread's process dies
    (prctl PR_SET_PDEATHSIG; kept across exec of nice/ionice/ffmpeg)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and everything it started, then reap it. Safe to call twice."""
    if proc.poll() is None:
        try:
            if sys.platform == "win32":
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)],
                               capture_output=True, check=False)  # fmt: skip
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _low_priority_prefix() -> list[str]:
    """A command prefix that runs ffmpeg at the lowest CPU and IO priority (Linux/macOS).

    ``nice``/``ionice`` exec the real program, so the pid (and process group) stay ffmpeg's.
    Windows priority is set by the farmhand, which has psutil.
    """
    prefix: list[str] = []
    if sys.platform.startswith("linux") and shutil.which("ionice"):
        prefix += ["ionice", "-c", "3", "-t"]  # -t: run anyway where a sandbox forbids it
    if sys.platform != "win32" and shutil.which("nice"):
        prefix += ["nice", "-n", "19"]
    return prefix
