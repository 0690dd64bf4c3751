"""Reboot-window arithmetic: parsing as locksmith's timeutil, and every minute of two
weeks checked against a brute-force list of window occurrences."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from flotilla.daemons.locksmith.window import (
    Window,
    WindowError,
    parse_go_duration,
    parse_window,
)

# 2026-12-28 is a Monday; the span crosses a month and a year boundary.
BASE = datetime(2026, 12, 24)


def occurrences(window: Window, around: datetime) -> list[tuple[datetime, datetime]]:
    """Every window start from three weeks before to three weeks after, by brute force."""
    out = []
    day = (around - timedelta(days=21)).replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(43):
        if window.weekday is None or day.weekday() == window.weekday:
            start = day.replace(hour=window.hour, minute=window.minute)
            out.append((start, start + window.length))
        day += timedelta(days=1)
    return out


WINDOWS = [
    ("04:00", "1h"), ("23:30", "1h"), ("00:00", "0s"), ("12:00", "23h59m"),
    ("Sat 23:00", "2h"), ("sun 00:00", "30m"), ("Fri 22:00", "50h"), ("Mon 09:15", "167h"),
    ("THU 04:00", "1h30m"),
]


@pytest.mark.parametrize(("start", "length"), WINDOWS)
def test_every_minute_of_two_weeks_agrees_with_brute_force(start: str, length: str) -> None:
    window = parse_window(start, length)
    spans = occurrences(window, BASE + timedelta(days=7))
    for minute in range(0, 14 * 24 * 60 + 1):
        now = BASE + timedelta(minutes=minute, seconds=30 if minute % 7 == 0 else 0)
        inside = any(a <= now <= b for a, b in spans)
        assert window.contains(now) is inside, (start, length, now)
        wait = window.until_start(now)
        if inside:
            assert wait == timedelta(0)
        else:
            upcoming = min(a for a, _ in spans if a > now)
            assert now + wait == upcoming, (start, length, now)
        prev = window.previous(now)
        assert prev.start <= now and (prev.start, prev.end) in spans
        nxt = window.next(now)
        assert nxt.start > now and (nxt.start, nxt.end) in spans
        assert not any(prev.start < a < nxt.start for a, _ in spans)


def test_window_end_is_included_and_the_next_second_is_not() -> None:
    window = parse_window("Sat 23:00", "2h")
    end = datetime(2027, 1, 3, 1, 0)  # Sunday 01:00
    assert window.contains(end)
    assert not window.contains(end + timedelta(seconds=1))
    assert window.until_end(end - timedelta(minutes=10)) == timedelta(minutes=10)
    assert window.until_start(end + timedelta(seconds=1)) == timedelta(days=7, hours=-2,
                                                                          seconds=-1)


def test_exactly_at_the_start_is_inside_and_next_is_a_period_later() -> None:
    daily = parse_window("04:00", "1h")
    at = datetime(2027, 1, 1, 4, 0)
    assert daily.contains(at)
    assert daily.next(at).start == at + timedelta(days=1)
    weekly = parse_window("Fri 04:00", "1h")
    assert weekly.next(at).start == at + timedelta(days=7)


@pytest.mark.parametrize(("start", "length", "message"), [
    ("04:00", "24h", "duration cannot exceed period"),
    ("Sun 04:00", "168h", "duration cannot exceed period"),
    ("04:00", "-1h", "duration cannot be negative"),
    ("Fun 04:00", "1h", 'invalid day of week "Fun"'),
    ("Sun 04:00 x", "1h", "wrong number of fields"),
    ("", "1h", "wrong number of fields"),
    ("24:00", "1h", "hour must be >= 0 and <= 23"),
    ("04:60", "1h", "minute must be >= 0 and <= 59"),
    ("4h", "1h", 'invalid time of day "4h"'),
    ("04:00", "1", "missing unit"),
    ("04:00", "1x", "invalid duration"),
    ("04:00", "", "invalid duration"),
])
def test_bad_settings_are_refused_in_locksmiths_words(start: str, length: str,
                                                      message: str) -> None:
    with pytest.raises(WindowError, match=message):
        parse_window(start, length)


def test_go_durations() -> None:
    cases = {"1h30m": 5400, "90m": 5400, "1.5h": 5400, "0": 0, "300ms": 0.3, "2h45m30s": 9930,
             "+1s": 1, "-1s": -1, ".5s": 0.5, "1us": 1e-6, "1µs": 1e-6, "36h": 129600}
    for text, seconds in cases.items():
        assert parse_go_duration(text).total_seconds() == pytest.approx(seconds), text
    assert parse_go_duration("1.s").total_seconds() == 1.0  # Go accepts a bare point
    for bad in ["1", "h", "1.", "1 h", "1d", "--1s", "."]:
        with pytest.raises(WindowError):
            parse_go_duration(bad)


def test_hours_and_minutes_with_leading_zeros_or_single_digits() -> None:
    assert parse_window("4:5", "1m") == Window(None, 4, 5, timedelta(minutes=1))
    assert parse_window("wed 07:09", "1m").weekday == 2
