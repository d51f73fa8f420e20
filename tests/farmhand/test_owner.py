"""Owner first: the gate pauses claiming for games, load from other programs and the schedule."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime

import psutil
import pytest

from farmhand.config import load_config
from farmhand.owner import OwnerGate, own_cpu_seconds
from farmhand.schedule import parse_schedule

BUSY = "import time\nt = time.time()\nwhile time.time() - t < 20: pass\n"


def _config(**settings):
    quiet = {"cpu_pause_percent": "off", "gpu_pause_percent": "off", "resume_delay_s": 0}
    return load_config({**quiet, **settings}, env={})


def _spawn_orphan(*argv: str) -> int:
    """Start a program the way the owner would: not a child of this (farmhand) process, whose
    own process tree the gate ignores. The shell in between exits at once. Returns its pid."""
    out = subprocess.run(
        ["sh", "-c", '"$@" >/dev/null 2>&1 & echo $!', "sh", *argv],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _poll(gate: OwnerGate, want, timeout_s: float = 2.0):
    """Call check() until want(reason) holds; return the last reason."""
    deadline = time.monotonic() + timeout_s
    while True:
        reason = gate.check()
        if want(reason) or time.monotonic() > deadline:
            return reason
        time.sleep(0.1)


def _fake_game(tmp_path) -> tuple[str, object]:
    """A copy of sleep under a name no other test run uses at the same time."""
    name = f"fakegame{os.getpid()}"
    game = tmp_path / name
    shutil.copy("/bin/sleep", game)
    return name, game


def test_named_game_pauses_claiming_until_it_exits(tmp_path):
    name, game = _fake_game(tmp_path)
    configured = f"{name.replace('fakegame', 'FakeGame')}.exe"  # Windows-style spelling too
    gate = OwnerGate(_config(pause_processes=f"steam, {configured}"))
    assert gate.check() is None

    pid = _spawn_orphan(str(game), "30")
    try:
        reason = _poll(gate, lambda r: r is not None)
        assert reason == f"paused: {configured} is running"
    finally:
        _kill(pid)
    assert _poll(gate, lambda r: r is None) is None


def test_claiming_resumes_only_after_the_resume_delay(tmp_path):
    name, game = _fake_game(tmp_path)
    clock = [1000.0]
    gate = OwnerGate(_config(pause_processes=name, resume_delay_s=60), clock=lambda: clock[0])
    pid = _spawn_orphan(str(game), "30")
    try:
        assert _poll(gate, lambda r: r is not None) == f"paused: {name} is running"
    finally:
        _kill(pid)
    _poll(gate, lambda r: r != f"paused: {name} is running")
    clock[0] += 20
    reason = gate.check()
    assert reason == f"paused: resuming in 40 s (last: {name} is running)"
    clock[0] += 41
    assert gate.check() is None


def test_outside_the_schedule_claiming_is_paused():
    config = replace(_config(), schedule=parse_schedule("22:00-08:00,sat,sun"))
    noon_tuesday = datetime(2026, 11, 24, 12, 0)
    gate = OwnerGate(config, now=lambda: noon_tuesday)
    assert gate.check() == "paused: outside schedule 22:00-08:00,sat,sun"
    late_tuesday = datetime(2026, 11, 24, 23, 30)
    assert OwnerGate(config, now=lambda: late_tuesday).check() is None


def _spawn_orphan_busy_loop() -> int:
    """A CPU-bound program that is not ours (see _spawn_orphan)."""
    return _spawn_orphan(sys.executable, "-c", BUSY)


def _load_by_others() -> float:
    gate = OwnerGate(_config(cpu_pause_percent=99, load_window_s=1))
    gate.check()
    time.sleep(1.0)
    return gate.measure().cpu_others_percent or 0.0


def test_cpu_load_from_another_program_pauses_claiming():
    one_core = 100 / psutil.cpu_count()
    limit = max(1, one_core / 2)  # a program using one full core is over the limit
    if (busy := _load_by_others()) > limit * 0.6:
        pytest.skip(f"the machine is already {busy:.0f}% busy with other programs")
    gate = OwnerGate(_config(cpu_pause_percent=limit, load_window_s=1))
    pid = _spawn_orphan_busy_loop()
    try:
        assert psutil.Process(pid).ppid() != os.getpid()
        reason = _poll(gate, lambda r: r is not None, timeout_s=5)
        assert reason is not None and reason.startswith("paused: CPU ")
        assert "used by other programs" in reason
    finally:
        _kill(pid)
    assert _poll(gate, lambda r: r is None, timeout_s=5) is None


def test_our_own_ffmpeg_children_do_not_count_as_owner_load():
    if (busy := _load_by_others()) > 40:
        pytest.skip(f"the machine is already {busy:.0f}% busy with other programs")
    gate = OwnerGate(_config(cpu_pause_percent=85, load_window_s=1))
    gate.check()
    # Our children keep every core busy: a render at full speed.
    children = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(psutil.cpu_count())]
    try:
        time.sleep(1.5)
        reasons = [gate.check() for _ in range(3)]
        others = gate.measure().cpu_others_percent
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert reasons == [None, None, None]
    # Counted as others, our children would be ~100% of the machine.
    assert others is not None and others < 85


def test_cpu_of_our_children_is_counted_as_ours_while_running_and_after_exit():
    # Works on a busy machine too: it counts CPU seconds, not shares of wall time.
    burn = "import time\nwhile time.process_time() < 0.3: pass\nprint('done', flush=True)\n"
    before = own_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "done"
        assert own_cpu_seconds() - before >= 0.25  # a running child (clock ticks: 10 ms)
    finally:
        child.kill()
        child.wait()
    assert own_cpu_seconds() - before >= 0.25  # and once it has exited and been reaped
