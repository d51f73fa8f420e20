"""Owner first: decide whether this PC is free for farm work right now.

The claim loop asks :meth:`OwnerGate.check` before every claim (and may ask every second while
paused). It answers ``None`` when the farmhand may claim, or the reason it may not, written for
the dashboard: ``"paused: game.exe is running"``. Reasons, in the order they are checked:

- outside the allowed schedule (``FARMHAND_SCHEDULE``);
- a process named in ``FARMHAND_PAUSE_PROCESSES`` runs;
- other programs use more CPU than ``FARMHAND_CPU_PAUSE_PERCENT`` of the machine, averaged over
  ``FARMHAND_LOAD_WINDOW_S`` (the farmhand itself and its ffmpeg children are not counted);
- the GPU is busier than ``FARMHAND_GPU_PAUSE_PERCENT`` (nvidia-smi; NVENC does not count).

After the owner is done (the game exits, the load drops) the gate waits
``FARMHAND_RESUME_DELAY_S`` before it opens again, so a job is not started just before the
owner starts the next match. Checking takes a few milliseconds; nvidia-smi is asked at most
every few seconds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psutil

from farmhand import gpus, platform
from farmhand.config import FarmhandConfig

GPU_SAMPLE_S = 5.0  # nvidia-smi costs a process start; its answer is reused this long
FIRST_SAMPLE_S = 0.25  # the very first check measures CPU over this short blocking interval


@dataclass(frozen=True)
class OwnerActivity:
    """What the gate measured (for logs and ``farmhand gate``)."""

    outside_schedule: bool
    running: tuple[str, ...]  # configured pause processes found running
    cpu_others_percent: float | None  # CPU used by other programs, % of the whole machine
    gpu_percent: float | None  # busiest GPU's 3D/compute engine, % (None: no NVIDIA GPU)


class OwnerGate:
    """Answers "may the farmhand claim a job now?" — see the module docstring."""

    def __init__(
        self,
        config: FarmhandConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.config = config
        self._clock = clock
        self._now = now
        self._pause_names = {platform.normalize_process_name(n): n for n in config.pause_processes}
        # (time, machine busy seconds, machine total seconds, our tree's busy seconds)
        self._cpu_samples: deque[tuple[float, float, float, float]] = deque()
        self._gpu_value: float | None = None
        self._gpu_at: float | None = None
        self._owner_seen_at: float | None = None
        self._owner_reason = ""

    def check(self) -> str | None:
        """None when free to claim, else the reason (``"paused: ..."``) for the board."""
        activity = self.measure()
        now = self._clock()
        if activity.outside_schedule:
            return f"paused: outside schedule {self.config.schedule}"
        reason = self._owner_reason_for(activity)
        if reason:
            self._owner_seen_at, self._owner_reason = now, reason
            return reason
        if self._owner_seen_at is not None:
            waited = now - self._owner_seen_at
            left = self.config.resume_delay_s - waited
            if left > 0:
                last = self._owner_reason.removeprefix("paused: ")
                return f"paused: resuming in {left:.0f} s (last: {last})"
            self._owner_seen_at = None
        return None

    def measure(self) -> OwnerActivity:
        """Measure everything the gate looks at, without deciding."""
        return OwnerActivity(
            outside_schedule=not self.config.schedule.allows(self._now()),
            running=self._running_pause_processes(),
            cpu_others_percent=self._cpu_others_percent(),
            gpu_percent=self._gpu_percent(),
        )

    # ---------------------------------------------------------------- the parts

    def _owner_reason_for(self, activity: OwnerActivity) -> str | None:
        if activity.running:
            return f"paused: {activity.running[0]} is running"
        cpu_limit = self.config.cpu_pause_percent
        cpu = activity.cpu_others_percent
        if cpu_limit is not None and cpu is not None and cpu > cpu_limit:
            return f"paused: CPU {cpu:.0f}% used by other programs (limit {cpu_limit:.0f}%)"
        gpu_limit = self.config.gpu_pause_percent
        gpu = activity.gpu_percent
        if gpu_limit is not None and gpu is not None and gpu > gpu_limit:
            return f"paused: GPU {gpu:.0f}% busy (limit {gpu_limit:.0f}%)"
        return None

    def _running_pause_processes(self) -> tuple[str, ...]:
        if not self._pause_names:
            return ()
        ours = {p.pid for p in platform.own_process_tree()}
        running = platform.running_process_names(exclude_pids=ours)
        return tuple(orig for norm, orig in self._pause_names.items() if norm in running)

    def _cpu_others_percent(self) -> float | None:
        """CPU time used by everything except this process tree, as % of all cores."""
        if self.config.cpu_pause_percent is None:
            return None
        if not self._cpu_samples:
            self._cpu_samples.append(self._cpu_sample())
            time.sleep(FIRST_SAMPLE_S)  # once, so the first claim is not made blind
        sample = self._cpu_sample()
        self._cpu_samples.append(sample)
        window = self.config.load_window_s
        # Keep one sample at least `window` old as the base, drop anything older.
        while len(self._cpu_samples) > 2 and sample[0] - self._cpu_samples[1][0] >= window:
            self._cpu_samples.popleft()
        base = self._cpu_samples[0]
        total = sample[2] - base[2]
        if total <= 0:
            return None
        others = (sample[1] - base[1]) - (sample[3] - base[3])
        return max(0.0, min(100.0, 100.0 * others / total))

    def _cpu_sample(self) -> tuple[float, float, float, float]:
        machine = psutil.cpu_times()
        total = sum(machine)
        # guest time is already inside user/nice on Linux; don't count it twice.
        total -= getattr(machine, "guest", 0.0) + getattr(machine, "guest_nice", 0.0)
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        return (self._clock(), total - idle, total, own_cpu_seconds())

    def _gpu_percent(self) -> float | None:
        if self.config.gpu_pause_percent is None:
            return None
        now = self._clock()
        if self._gpu_at is None or now - self._gpu_at >= GPU_SAMPLE_S:
            self._gpu_value = gpus.nvidia_utilization(self.config.nvidia_smi, timeout_s=2.0)
            self._gpu_at = now
        return self._gpu_value


def own_cpu_seconds() -> float:
    """CPU seconds used by this process and its descendants, living or already reaped.

    A child's time moves from its own counters into its parent's ``children_*`` counters when
    it is reaped, so summing both over the live tree stays continuous as ffmpeg runs start
    and end.
    """
    total = 0.0
    for proc in platform.own_process_tree():
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total
