"""Everything the farmhand does differently on Windows, Linux and macOS, in one place.

Killing a process tree, lowering priority, listing running programs (to spot a game), locking
files shared by two farmhand processes, where state and cache live by default, and how to install
the farmhand as a service. Built on psutil wherever it can be, so the rest of the farmhand is
plain portable Python. Linux is what CI proves; the Windows branches follow psutil's documented
API.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

WINDOWS = sys.platform == "win32"
MACOS = sys.platform == "darwin"

if WINDOWS:  # pragma: no cover - exercised on Windows only
    import msvcrt
else:
    import fcntl


# ---------------------------------------------------------------- processes


def kill_tree(pid: int, *, timeout_s: float = 5.0) -> None:
    """Stop process ``pid`` and all its descendants: terminate, wait, then kill what is left.

    Children are collected before the parent is signalled, so grandchildren that would be
    re-parented on the parent's death are still found. A process that is already gone is fine.
    """
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        procs = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        procs = [parent]
    for proc in procs:
        try:
            proc.terminate()  # SIGTERM on POSIX, TerminateProcess on Windows
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    alive = _wait_gone(procs, timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _wait_gone(alive, timeout_s)


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until ``procs`` have exited; returns those still running at the timeout.

    A zombie counts as gone (psutil.wait_procs would wait for whoever adopted it to reap it),
    and our own children are reaped here.
    """
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def _gone(proc: psutil.Process) -> bool:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(psutil.Error, ChildProcessError):
                proc.wait(timeout=0)  # reaps it when it is our child
            return True
        return not proc.is_running()
    except psutil.NoSuchProcess:
        return True


def lower_priority(pid: int | None = None) -> list[str]:
    """Give process ``pid`` (default: this one) the lowest CPU and IO priority the OS offers.

    POSIX: nice 19; Linux also IO class idle. Windows: IDLE_PRIORITY_CLASS and very low IO
    priority. Children started afterwards inherit it, so call it before starting ffmpeg. Returns
    what was applied (for the log); a setting the OS refuses is logged and skipped, never fatal.
    """
    proc = psutil.Process(pid)
    applied: list[str] = []
    try:
        if WINDOWS:  # pragma: no cover
            proc.nice(psutil.IDLE_PRIORITY_CLASS)
            applied.append("cpu: idle priority class")
        else:
            proc.nice(19)
            applied.append("cpu: nice 19")
    except (psutil.AccessDenied, OSError) as exc:
        log.warning("could not lower CPU priority of pid %s: %s", proc.pid, exc)
    if hasattr(proc, "ionice"):  # Linux and Windows; macOS has no per-process IO priority
        try:
            if WINDOWS:  # pragma: no cover
                proc.ionice(psutil.IOPRIO_VERYLOW)
                applied.append("io: very low")
            else:
                proc.ionice(psutil.IOPRIO_CLASS_IDLE)
                applied.append("io: idle class")
        except (psutil.AccessDenied, OSError) as exc:
            log.warning("could not lower IO priority of pid %s: %s", proc.pid, exc)
    return applied


def normalize_process_name(name: str) -> str:
    """The form process names are compared in: lower case, without a Windows ``.exe``."""
    name = name.strip().lower()
    return name[:-4] if name.endswith(".exe") else name


def running_process_names(exclude_pids: set[int] | frozenset[int] = frozenset()) -> set[str]:
    """Names of running processes (normalized), skipping ``exclude_pids``.

    Uses psutil's name, which on Linux reads the full name from the command line when the
    kernel's 15-character name is truncated; processes we may not inspect are skipped.
    """
    names: set[str] = set()
    for proc in psutil.process_iter(["name", "status"]):
        if proc.pid in exclude_pids or proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue  # a zombie has exited; only its parent has not collected it yet
        name = proc.info.get("name")
        if name:
            names.add(normalize_process_name(name))
    return names


def own_process_tree() -> list[psutil.Process]:
    """This process and everything it started (ffmpeg, yt-dlp's ffmpeg...), still running."""
    me = psutil.Process()
    try:
        return [me, *me.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [me]


# ---------------------------------------------------------------- file locks


def lock_file(fd: int, *, exclusive: bool, blocking: bool) -> bool:
    """Lock the open file ``fd``. Returns False when ``blocking`` is off and it is held elsewhere.

    POSIX uses ``flock`` (shared or exclusive; separate opens conflict even in one process).
    Windows has no shared lock in msvcrt: a shared request is granted without locking, because
    Windows itself refuses to delete a file another process has open, which is what shared
    locks protect in the media cache.
    """
    if WINDOWS:  # pragma: no cover
        if not exclusive:
            return True
        mode = msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK
        os.lseek(fd, 0, os.SEEK_SET)  # msvcrt locks bytes from the current position
        while True:
            try:
                msvcrt.locking(fd, mode, 1)
                return True
            except OSError:
                if not blocking:
                    return False
                # LK_LOCK gives up after ~10 s; a download may hold the lock far longer.
    op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    if not blocking:
        op |= fcntl.LOCK_NB
    try:
        fcntl.flock(fd, op)
    except BlockingIOError:
        return False
    return True


def unlock_file(fd: int) -> None:
    """Release a lock taken with :func:`lock_file` (closing the file releases it as well)."""
    if WINDOWS:  # pragma: no cover
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


# ---------------------------------------------------------------- locations


def default_state_dir() -> Path:
    """Where the farmhand keeps its token and probe results when not configured.

    systemd's ``StateDirectory=`` (``$STATE_DIRECTORY``) wins; then the platform's per-user
    location: ``%LOCALAPPDATA%\\clipfarm\\farmhand``, ``~/Library/Application Support/...``,
    ``$XDG_STATE_HOME/clipfarm-farmhand`` (``~/.local/state``).
    """
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if WINDOWS:  # pragma: no cover
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "clipfarm" / "farmhand"
    if MACOS:  # pragma: no cover
        return Path.home() / "Library" / "Application Support" / "clipfarm-farmhand"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "clipfarm-farmhand"


def default_cache_dir() -> Path:
    """Where downloaded media is cached when not configured (``$CACHE_DIRECTORY`` first)."""
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    if WINDOWS:  # pragma: no cover
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "clipfarm" / "cache"
    if MACOS:  # pragma: no cover
        return Path.home() / "Library" / "Caches" / "clipfarm-farmhand"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipfarm-farmhand"


def token_file_is_private(path: Path) -> bool:
    """Whether only the owner may read ``path``.

    POSIX: no group or other permission bits. Windows has no such bits (ACLs decide, and a
    file under ``%LOCALAPPDATA%`` is private to its user), so it counts as private there.
    """
    if WINDOWS:  # pragma: no cover
        return True
    return (path.stat().st_mode & 0o077) == 0


# ---------------------------------------------------------------- service


def service_install_hint(executable: str | None = None) -> str:
    """How to run the farmhand as a service on this platform, as text for a person."""
    exe = executable or str(Path(sys.argv[0]).resolve())
    if WINDOWS:  # pragma: no cover
        return (
            "Windows: run the farmhand as a scheduled task that starts at log-on (it then sees\n"
            "your games and yields to them):\n"
            f'  schtasks /Create /TN clipfarm-farmhand /SC ONLOGON /RL LIMITED /TR "\\"{exe}\\" run"\n'
            "Set FARMHAND_BOARD_URL and FARMHAND_TOKEN_FILE as user environment variables\n"
            "(setx FARMHAND_BOARD_URL http://board:8000), then `farmhand enroll --token -`.\n"
            "To run it as a real service without log-on, wrap it with NSSM:\n"
            f'  nssm install clipfarm-farmhand "{exe}" run'
        )
    if MACOS:  # pragma: no cover
        return (
            "macOS: create ~/Library/LaunchAgents/org.clipfarm.farmhand.plist with\n"
            f"ProgramArguments [{exe}, run], KeepAlive true, ProcessType Background and the\n"
            "FARMHAND_* variables in EnvironmentVariables, then\n"
            "  launchctl load ~/Library/LaunchAgents/org.clipfarm.farmhand.plist"
        )
    return (
        "Linux (systemd): install the unit shipped as deploy/farmhand.service\n"
        "  sudo useradd --system --home-dir /var/lib/clipfarm-farmhand --groups video,render farmhand\n"
        "  sudo install -D -m 0600 deploy/farmhand.env.example /etc/clipfarm/farmhand.env\n"
        "  sudo $EDITOR /etc/clipfarm/farmhand.env   # FARMHAND_BOARD_URL, FARMHAND_TOKEN\n"
        "  sudo install -m 0644 deploy/farmhand.service /etc/systemd/system/farmhand.service\n"
        "  sudo systemctl daemon-reload && sudo systemctl enable --now farmhand\n"
        "  journalctl -u farmhand -f\n"
        "The unit runs /opt/clipfarm/.venv/bin/farmhand run; edit ExecStart= if you installed\n"
        f"elsewhere (this farmhand is {exe})."
    )
