"""Probing uploads with ffprobe in processes of their own: a few at a time, each memory-capped
and timed.

An upload is a stranger's file, and ffprobe allocates what a file declares: a tiny PNG can ask
for hundreds of megabytes, a crafted one can keep ffprobe busy. So the board never probes in its
own process, nor in the thread pool its requests share. Each probe is a child process
(``python -m board.infra.probing``) that first limits its own address space (``RLIMIT_AS``) and
CPU time (``RLIMIT_CPU``) with ``resource.setrlimit`` and then runs ``timeline.probe.probe``;
the ffprobe it starts inherits both limits. The limits are set by the child on itself rather than
in a ``preexec_fn``, which is unsafe in a process with threads (the board has its database
threads). The board runs at most ``concurrency`` probes at once: the others wait their turn on a
semaphore, holding no thread, so a burst of uploads never starves other requests. A probe that
runs past ``timeout_s`` has its whole process group killed.

The caps on what a file may declare (pixels, streams, duration) and the allow-lists of formats
and protocols are ``timeline.probe``'s; this module only decides where and how a probe runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

from timeline.probe import InputTooLarge, MediaInfo, ProbeError, RefusedFormat, probe

# Error classes a child reports by name, rebuilt on the board's side.
_ERRORS: dict[str, type[ProbeError]] = {
    "RefusedFormat": RefusedFormat,
    "InputTooLarge": InputTooLarge,
    "ProbeError": ProbeError,
}


class Prober:
    """Runs ``timeline.probe.probe`` in child processes: ``concurrency`` at a time, each limited
    to ``memory_bytes`` of address space and killed after ``timeout_s``."""

    def __init__(self, *, concurrency: int, memory_bytes: int, timeout_s: float) -> None:
        self.concurrency = max(1, concurrency)
        self.memory_bytes = memory_bytes
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(self.concurrency)
        self.running = 0  # probes whose process is alive now

    async def probe(self, path: Path, *, label: str) -> MediaInfo:
        """What ``path`` holds. Raises ``ProbeError`` (or its ``RefusedFormat`` and
        ``InputTooLarge``) with a message naming ``label``, also when the probe ran out of
        memory or time."""
        async with self._slots:
            self.running += 1
            try:
                return await self._run(path, label)
            finally:
                self.running -= 1

    async def _run(self, path: Path, label: str) -> MediaInfo:
        cpu_s = max(1, int(self.timeout_s) + 1)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "board.infra.probing",
            str(path), label, str(self.memory_bytes), str(cpu_s),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills ffprobe with it
            env=_child_env(),
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except TimeoutError:
            _kill_group(process.pid)
            await process.wait()
            raise ProbeError(
                f"{label}: reading it took longer than {self.timeout_s:g} s; the file is "
                "probably damaged or crafted",
                label=label,
            ) from None
        except BaseException:  # the upload was abandoned (cancelled): leave no probe behind
            _kill_group(process.pid)
            with contextlib.suppress(ProcessLookupError):
                await process.wait()
            raise
        return _answer(out, err, process.returncode, label)


def _answer(out: bytes, err: bytes, returncode: int | None, label: str) -> MediaInfo:
    """The child's answer: the ``MediaInfo``, or its error raised again here."""
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "info" in answer:
        fields = answer["info"]
        fields["path"] = Path(fields["path"])
        return MediaInfo(**fields)
    if isinstance(answer, dict) and "error" in answer:
        kind = _ERRORS.get(answer["error"], ProbeError)
        raise kind(answer["message"], label=label)
    if (
        returncode is not None
        and returncode < 0
        and -returncode in (signal.SIGXCPU, signal.SIGKILL)
    ):
        why = "it used too much CPU time"
    elif b"MemoryError" in err:
        why = "it needed more memory than a probe may use"
    else:
        why = f"the probe process ended with status {returncode}"
    raise ProbeError(f"{label}: could not be read ({why})", label=label)


def _child_env() -> dict[str, str]:
    """The board's environment, with the folder ``board`` is imported from on the child's path
    (a board run from a checkout, not installed)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _limit_self(memory_bytes: int, cpu_s: int) -> None:
    """Cap this process's address space and CPU time; what it starts inherits the caps."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def main(argv: list[str]) -> int:
    """The child: ``FILE LABEL MEMORY_BYTES CPU_S``; prints ``{"info": ...}`` or ``{"error":
    class name, "message": ...}`` as one JSON line."""
    path, label, memory_bytes, cpu_s = argv
    _limit_self(int(memory_bytes), int(cpu_s))
    try:
        info = probe(Path(path), label=label)
    except ProbeError as exc:
        kind = type(exc).__name__ if type(exc).__name__ in _ERRORS else "ProbeError"
        print(json.dumps({"error": kind, "message": exc.message}))
        return 0
    fields = dataclasses.asdict(info)
    fields["path"] = str(info.path)
    print(json.dumps({"info": fields}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
