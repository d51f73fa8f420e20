"""When the owner lets the farmhand work: a small, readable schedule format.

A schedule is a comma-separated list of windows; the farmhand may claim work while *any* window
is open (local time of the machine). Each window is days, times, or days then times::

    22:00-08:00            every night (a window may run past midnight)
    sat,sun                all of Saturday and Sunday
    22:00-08:00,sat,sun    nights, and all weekend
    mon-fri 18:00-23:30    weekday evenings
    fri 22:00-02:00        Friday night into early Saturday (the part after midnight belongs
                           to the day the window starts)

Days are ``mon tue wed thu fri sat sun`` (or full names), ranges like ``mon-fri`` or ``fri-mon``
(wrapping). Times are ``HH:MM`` 24-hour, the end exclusive; ``24:00`` means midnight at the end
of the day; an end at or before the start runs into the next day. An empty schedule (or
``always``) is always open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


class ScheduleError(ValueError):
    """A schedule that cannot be read; the message says which part and what is expected."""


@dataclass(frozen=True)
class Window:
    """One window: on ``days`` (None = every day), between ``start`` and ``end`` minutes after
    midnight (None = the whole day)."""

    days: frozenset[int] | None
    start: int | None = None
    end: int | None = None

    def is_open(self, weekday: int, minute: int) -> bool:
        """Whether the window is open at ``minute`` after midnight on ``weekday`` (0 = Monday)."""

        def on(day: int) -> bool:
            return self.days is None or day in self.days

        if self.start is None or self.end is None:
            return on(weekday)
        if self.start < self.end:
            return on(weekday) and self.start <= minute < self.end
        # Runs past midnight: the early part belongs to the day before.
        return (on(weekday) and minute >= self.start) or (
            on((weekday - 1) % 7) and minute < self.end
        )


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; ``str()`` gives back the text it was written as."""

    text: str
    windows: tuple[Window, ...]

    @property
    def always(self) -> bool:
        """True when there is no restriction at all."""
        return not self.windows

    def allows(self, when: datetime | None = None) -> bool:
        """Whether claiming is allowed at ``when`` (default: now, local time)."""
        if not self.windows:
            return True
        when = when or datetime.now()
        minute = when.hour * 60 + when.minute
        return any(w.is_open(when.weekday(), minute) for w in self.windows)

    def __str__(self) -> str:
        return self.text


def parse_schedule(text: str | None) -> Schedule:
    """Read a schedule (format in the module docstring). Raises :class:`ScheduleError`."""
    cleaned = " ".join((text or "").split())
    if cleaned.lower() in ("", "always", "any", "*"):
        return Schedule(text=cleaned, windows=())
    windows = []
    for raw in cleaned.split(","):
        item = raw.strip()
        if not item:
            raise ScheduleError(f"schedule {cleaned!r} has an empty entry (two commas in a row?)")
        windows.append(_parse_window(item, cleaned))
    return Schedule(text=cleaned, windows=tuple(windows))


def _parse_window(item: str, whole: str) -> Window:
    parts = item.split(" ", 1)
    days: frozenset[int] | None = None
    times = item
    if not item[0].isdigit():  # starts with days
        days = _parse_days(parts[0], whole)
        times = parts[1] if len(parts) > 1 else ""
    if not times:
        return Window(days=days)
    match = _TIME_RANGE.match(times.replace(" ", ""))
    if not match:
        raise ScheduleError(
            f"cannot read {item!r} in schedule {whole!r}: expected days (sat, mon-fri), "
            "a time range (22:00-08:00) or both (mon-fri 18:00-23:00)"
        )
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = _minute(h1, m1, item, whole), _minute(h2, m2, item, whole)
    if start == 24 * 60:
        raise ScheduleError(f"{item!r} in schedule {whole!r} starts at 24:00; write 00:00")
    return Window(days=days, start=start, end=end)


def _minute(hour: int, minute: int, item: str, whole: str) -> int:
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise ScheduleError(f"{item!r} in schedule {whole!r} has an impossible time")
    return hour * 60 + minute


def _day(name: str, whole: str) -> int:
    key = name.strip().lower()
    if key in _DAYS:
        return _DAYS.index(key)
    if key in _FULL_DAYS:
        return _FULL_DAYS.index(key)
    raise ScheduleError(
        f"unknown day {name!r} in schedule {whole!r}; use mon, tue, wed, thu, fri, sat, sun"
    )


def _parse_days(text: str, whole: str) -> frozenset[int]:
    if "-" in text:
        first, _, last = text.partition("-")
        a, b = _day(first, whole), _day(last, whole)
        span = (b - a) % 7
        return frozenset((a + i) % 7 for i in range(span + 1))
    return frozenset({_day(text, whole)})
