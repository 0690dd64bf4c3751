"""When the next update check happens, and why: update_engine's schedule, made visible.

update_engine checks 7 minutes after start, then every 45 minutes, each time shifted by a
random fuzz (±5 minutes) so a fleet booted together does not ask all at once. A server's
``PollInterval`` replaces the period; a 500 or 503 doubles the last interval (at most 4
hours); nothing is ever scheduled sooner than the period, except the quick retry after a
failed attempt. Users could not see any of this; here every value is configurable and
each decision carries a reason the shell logs and ``update_engine_client -status`` shows.
Randomness comes in as a number in [0, 1), time as an argument.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Seconds; the defaults are update_engine's."""

    initial: float = 7 * 60
    period: float = 45 * 60
    fuzz: float = 10 * 60
    quick: float = 60
    max_backoff: float = 4 * 60 * 60

    def __post_init__(self) -> None:
        for name in ("initial", "period", "fuzz", "quick", "max_backoff"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.period <= 0:
            raise ValueError("period must be positive")
        if self.max_backoff < self.period:
            raise ValueError("max_backoff must be at least the period")


@dataclasses.dataclass(frozen=True)
class NextCheck:
    """A scheduled check: when, the interval it came from, and the reason in words."""

    at: float
    interval: float
    fuzz: float
    reason: str


def _fuzzed(interval: float, fuzz: float, random01: float) -> float:
    """``interval`` moved by up to half of ``fuzz`` either way, never below zero."""
    return max(0.0, interval - fuzz / 2 + fuzz * random01)


class CheckSchedule:
    """Remembers the last interval so that back-off can double it."""

    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        self.last_interval = config.period

    def first(self, now: float, random01: float) -> NextCheck:
        c = self.config
        return NextCheck(now + _fuzzed(c.initial, c.fuzz, random01), c.initial, c.fuzz,
                         "first check after start")

    def after(self, now: float, random01: float, *, poll_interval: float = 0,
              http_status: int = 0, quick: bool = False) -> NextCheck:
        """The check after one that just ended (with the server's answer, if any)."""
        c = self.config
        fuzz: float | None = None  # upstream fuzzes an unusual interval by its own length
        if quick:
            interval, reason = c.quick, "quick retry after a failed attempt"
        else:
            if poll_interval > 0:
                interval, reason = poll_interval, f"server asked for {poll_interval:g} s"
            elif http_status in (500, 503):
                interval = 2 * self.last_interval
                reason = f"back-off after HTTP {http_status}"
            else:
                interval, reason = c.period, "periodic check"
            if interval > c.max_backoff:
                interval, reason = c.max_backoff, reason + " (capped)"
            if interval < c.period:
                interval, fuzz = c.period, c.fuzz
                reason = reason if reason == "periodic check" else reason + " (raised to period)"
            if interval == c.period:
                fuzz = c.fuzz
        if fuzz is None:
            fuzz = interval
        self.last_interval = interval
        return NextCheck(now + _fuzzed(interval, fuzz, random01), interval, fuzz, reason)
