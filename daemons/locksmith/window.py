"""Reboot windows: ``LOCKSMITHD_REBOOT_WINDOW_START``/``_LENGTH`` parsed and evaluated. Pure.

A window starts daily (``"HH:MM"``) or weekly (``"Thu 04:00"``, day names ``Sun``..``Sat``
in any case) and lasts a Go duration (``"1h30m"``, ``"90m"``, ``"2.5h"``); a daily window
must be shorter than a day, a weekly one shorter than a week, and neither may be negative,
as locksmith's ``pkg/timeutil`` requires, with its error words.

Times are wall-clock times of the machine's zone, given as naive ``datetime`` values by the
caller (the shell passes ``datetime.now()``), exactly as upstream computes them: the start
is that wall time on the right day and the end is start plus the length. Nothing here reads
a clock. Unlike upstream, callers also ask :meth:`Window.contains` before every attempt,
so a lock won late does not reboot the machine after the window closed (coreos/bugs#1886).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta

WEEKDAYS = {"sun": 6, "mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5}
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


class WindowError(ValueError):
    """A window setting that cannot be used; the message is locksmith's."""


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
          "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> timedelta:
    """Go's ``time.ParseDuration``: a signed sequence of decimal numbers with units."""
    rest = text
    sign = 1.0
    if rest[:1] in "+-" and rest:
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return timedelta(0)
    if not rest:
        raise WindowError(f"time: invalid duration {text!r}")
    total = 0.0
    while rest:
        match = _PART.match(rest)
        if not match or match.group(1) in ("", "."):
            if re.match(r"[0-9.]+$", rest):
                raise WindowError(f"time: missing unit in duration {text!r}")
            raise WindowError(f"time: invalid duration {text!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        rest = rest[match.end():]
    return timedelta(seconds=sign * total)


@dataclasses.dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime


@dataclasses.dataclass(frozen=True)
class Window:
    """A recurring window: ``weekday`` is Python's (Mon=0) or None for a daily one."""

    weekday: int | None
    hour: int
    minute: int
    length: timedelta

    def _at(self, ref: datetime, day_shift: int) -> datetime:
        day = ref.date() + timedelta(days=day_shift)
        return datetime(day.year, day.month, day.day, self.hour, self.minute)

    def previous(self, ref: datetime) -> Period:
        """The latest window that started at or before ``ref``."""
        if self.weekday is None:
            start = self._at(ref, 0)
            if start > ref:
                start = self._at(ref, -1)
        else:
            start = self._at(ref, self.weekday - ref.weekday())
            if start > ref:
                start -= WEEK
        return Period(start, start + self.length)

    def next(self, ref: datetime) -> Period:
        """The first window that starts strictly after ``ref``."""
        start = self.previous(ref).start + (DAY if self.weekday is None else WEEK)
        return Period(start, start + self.length)

    def contains(self, ref: datetime) -> bool:
        """Inside the window that started last (its end included, as upstream)."""
        return ref <= self.previous(ref).end

    def until_start(self, ref: datetime) -> timedelta:
        """How long from ``ref`` until a window is open: zero when inside one."""
        if self.contains(ref):
            return timedelta(0)
        return self.next(ref).start - ref

    def until_end(self, ref: datetime) -> timedelta:
        """How long the current window stays open (zero, or negative, outside it)."""
        return self.previous(ref).end - ref


def parse_window(start: str, length: str) -> Window:
    """Both settings as locksmith reads them; errors in its words."""
    fields = start.split()
    weekday: int | None = None
    if len(fields) == 2:
        day = WEEKDAYS.get(fields[0].lower())
        if day is None:
            raise WindowError(f'unable to parse start: invalid day of week "{fields[0]}"')
        weekday = day
        fields = fields[1:]
    elif len(fields) != 1:
        raise WindowError("unable to parse start: wrong number of fields")
    match = re.fullmatch(r"([+-]?[0-9]+):([+-]?[0-9]+)", fields[0])
    if not match:
        raise WindowError(f'unable to parse start: invalid time of day "{fields[0]}"')
    hour, minute = int(match.group(1)), int(match.group(2))
    if not 0 <= hour <= 23:
        raise WindowError(f'unable to parse start: invalid time of day "{fields[0]}": '
                          "hour must be >= 0 and <= 23")
    if not 0 <= minute <= 59:
        raise WindowError(f'unable to parse start: invalid time of day "{fields[0]}": '
                          "minute must be >= 0 and <= 59")
    try:
        duration = parse_go_duration(length)
    except WindowError as err:
        raise WindowError(f"unable to parse duration: {err}") from err
    if duration < timedelta(0):
        raise WindowError("duration cannot be negative")
    if (weekday is None and duration >= DAY) or duration >= WEEK:
        raise WindowError("duration cannot exceed period")
    return Window(weekday, hour, minute, duration)
