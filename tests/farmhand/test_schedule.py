"""The schedule format: when the owner lets the farmhand work."""

from __future__ import annotations

from datetime import datetime

import pytest

from farmhand.schedule import ScheduleError, parse_schedule

# 2026-11-23 is a Monday.
MON, FRI, SAT, SUN = 23, 27, 28, 29


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute)


def test_nights_and_weekends():
    schedule = parse_schedule("22:00-08:00,sat,sun")
    assert schedule.allows(at(MON, 23, 30))
    assert schedule.allows(at(MON, 7, 59))
    assert not schedule.allows(at(MON, 8, 0))  # the end is exclusive
    assert not schedule.allows(at(MON, 12))
    assert schedule.allows(at(SAT, 12))
    assert schedule.allows(at(SUN, 21))
    assert str(schedule) == "22:00-08:00,sat,sun"


def test_a_night_window_belongs_to_the_day_it_starts():
    schedule = parse_schedule("fri 22:00-02:00")
    assert schedule.allows(at(FRI, 23))
    assert schedule.allows(at(SAT, 1, 30))  # Friday night, after midnight
    assert not schedule.allows(at(FRI, 1, 30))  # that is Thursday night's
    assert not schedule.allows(at(SAT, 23))


def test_day_ranges_with_hours():
    schedule = parse_schedule("mon-fri 18:00-23:30")
    assert schedule.allows(at(MON, 18))
    assert schedule.allows(at(FRI, 23, 29))
    assert not schedule.allows(at(SAT, 19))
    assert parse_schedule("fri-mon").allows(at(SUN, 3))  # ranges wrap around the week
    assert parse_schedule("Saturday").allows(at(SAT, 0))


def test_empty_schedule_is_always_open():
    for text in ("", "always", None):
        schedule = parse_schedule(text)
        assert schedule.always
        assert schedule.allows(at(MON, 12))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("22:00-8", "cannot read"),
        ("funday", "unknown day"),
        ("25:00-26:00", "impossible time"),
        ("sat,,sun", "empty entry"),
        ("24:00-01:00", "write 00:00"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text, says):
    with pytest.raises(ScheduleError, match=says):
        parse_schedule(text)
