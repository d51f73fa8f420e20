"""Prometheus text exposition for ``/metrics``: counters and a claim-latency histogram kept in
process, queue depth and farm size read from the database at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

# seconds from a claim request to its answer when a job was handed out (long-poll wait included)
CLAIM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.n}')
        out += [f"{name}_sum {self.total:.6f}", f"{name}_count {self.n}"]
        return out


@dataclass
class Metrics:
    claim_latency: Histogram = field(default_factory=lambda: Histogram(CLAIM_BUCKETS))
    events: Counter = field(default_factory=Counter)  # transitions by (from, to)

    def transition(self, to_state: str) -> None:
        self.events[to_state] += 1

    def render(
        self,
        *,
        jobs_by_state: dict[str, int],
        farmhands_online: int,
        farmhands_by_state: dict[str, int],
    ) -> str:
        lines = [
            "# HELP clipfarm_jobs Jobs on the board by state.",
            "# TYPE clipfarm_jobs gauge",
        ]
        lines += [f'clipfarm_jobs{{state="{s}"}} {n}' for s, n in sorted(jobs_by_state.items())]
        lines += [
            "# HELP clipfarm_farmhands_online Farmhands seen within the lease time.",
            "# TYPE clipfarm_farmhands_online gauge",
            f"clipfarm_farmhands_online {farmhands_online}",
            "# HELP clipfarm_farmhands Farmhands by admin state.",
            "# TYPE clipfarm_farmhands gauge",
        ]
        lines += [
            f'clipfarm_farmhands{{state="{s}"}} {n}' for s, n in sorted(farmhands_by_state.items())
        ]
        lines += [
            "# HELP clipfarm_job_transitions_total Job state changes made by this process.",
            "# TYPE clipfarm_job_transitions_total counter",
        ]
        lines += [
            f'clipfarm_job_transitions_total{{to="{s}"}} {n}'
            for s, n in sorted(self.events.items())
        ]
        lines += [
            "# HELP clipfarm_claim_latency_seconds Time to answer a successful claim.",
            "# TYPE clipfarm_claim_latency_seconds histogram",
            *self.claim_latency.lines("clipfarm_claim_latency_seconds"),
        ]
        return "\n".join(lines) + "\n"
