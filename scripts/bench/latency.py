"""Latency samples by name, and their percentiles."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Latencies:
    """Seconds per named operation."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def count(self, name: str) -> int:
        return len(self.samples.get(name, []))

    def pct(self, name: str, p: float) -> float:
        """The ``p``-th percentile of ``name`` in seconds (nan when there is none)."""
        values = sorted(self.samples.get(name, []))
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(p / 100 * len(values)))]

    def ms(self, name: str) -> str:
        """``p50 / p99`` in milliseconds."""
        return f"{self.pct(name, 50) * 1000:.1f} / {self.pct(name, 99) * 1000:.1f}"
