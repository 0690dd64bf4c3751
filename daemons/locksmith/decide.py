"""What locksmithd does next, decided from its settings, the window and the time. Pure.

The daemon's shell asks :func:`next_step` each time something changed (a reboot became
needed, a lock attempt failed, a wait ended) and does what the answer says. Keeping the
decision here makes every rule testable without a bus, a store or a clock:

* ``off``: nothing, ever; ``reboot``: reboot without a lock; ``etcd-lock``: take a slot in
  the store's semaphore first. An empty strategy is ``reboot`` (locksmith 0.6's default).
  ``best-effort`` (removed upstream in 0.6, the default before) is read as it used to mean:
  ``etcd-lock`` when a store unit (etcd, etcd2, kvd) is running here, else ``reboot``.
* With a window, nothing starts outside it: before each lock attempt and again before the
  reboot itself. A lock won after the window closed is given back and the daemon waits for
  the next window (upstream rebooted anyway, coreos/bugs#1886; Flatcar re-checked only the
  start).
* Drain hooks (:mod:`.drain`) run after the lock is held and inside the window, just
  before the reboot (``drain_pending``); the shell gives the slot back when they fail.
* Failed attempts back off from 5 s, doubling, to at most 5 minutes (upstream's numbers),
  but never sleep past the window's end: the next decision then sees the window closed.
  Unlike upstream, that wait ends early when the semaphore changes (the shell watches the
  key): a slot given back is taken at once, not after the rest of the back-off, so a
  rolling reboot is paced by reboots rather than by retry timers.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

from .window import Window

NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
INITIAL_BACKOFF = 5.0
MAX_BACKOFF = 300.0


class Strategy(enum.StrEnum):
    ETCD_LOCK = "etcd-lock"
    REBOOT = "reboot"
    OFF = "off"
    BEST_EFFORT = "best-effort"


class StrategyError(ValueError):
    pass


def parse_strategy(text: str) -> Strategy:
    if text == "":
        return Strategy.REBOOT
    try:
        return Strategy(text)
    except ValueError:
        raise StrategyError(f"unknown strategy: {text}") from None


def effective(strategy: Strategy, store_unit_running: bool) -> Strategy:
    """``best-effort`` resolved the way locksmith before 0.6 resolved it."""
    if strategy is Strategy.BEST_EFFORT:
        return Strategy.ETCD_LOCK if store_unit_running else Strategy.REBOOT
    return strategy


class Kind(enum.Enum):
    IDLE = "idle"            # nothing to do (no reboot needed, or strategy off)
    WAIT = "wait"            # sleep ``seconds`` then decide again
    LOCK = "lock"            # try to take a slot now
    RELEASE = "release"      # give the slot back (window closed), then decide again
    DRAIN = "drain"          # start the drain units; reboot only if they all succeed
    REBOOT = "reboot"        # broadcast and reboot now


@dataclasses.dataclass(frozen=True)
class Step:
    kind: Kind
    seconds: float = 0.0
    reason: str = ""
    #: a WAIT that should end early when the semaphore changes (a slot may have freed)
    wake_on_change: bool = False


def next_step(strategy: Strategy, *, need_reboot: bool, window: Window | None,
              now: datetime, holding: bool, backoff: float = 0.0,
              drain_pending: bool = False) -> Step:
    """The next thing to do.

    ``holding`` says this machine holds a slot; ``backoff`` is the delay owed after a
    failed lock attempt (0 when the last attempt did not fail); ``drain_pending`` says
    drain units are configured and have not succeeded since the slot was taken.
    """
    if strategy is Strategy.OFF or not need_reboot:
        return Step(Kind.IDLE, reason="no reboot needed" if need_reboot is False
                    else "reboot strategy is off")
    if window is not None and not window.contains(now):
        if holding:
            return Step(Kind.RELEASE, reason="the reboot window closed before the reboot")
        wait = window.until_start(now).total_seconds()
        return Step(Kind.WAIT, wait, f"waiting {wait:.0f}s for the reboot window")
    if strategy is Strategy.REBOOT or holding:
        if drain_pending:
            return Step(Kind.DRAIN, reason="draining before the reboot")
        return Step(Kind.REBOOT, reason="holding a reboot slot" if holding else "strategy reboot")
    if strategy is not Strategy.ETCD_LOCK:
        raise StrategyError(f"unknown strategy: {strategy}")
    if backoff > 0:
        wait = backoff
        if window is not None:
            wait = min(wait, max(window.until_end(now).total_seconds(), 0.0) + 1.0)
        return Step(Kind.WAIT, wait, f"retrying the lock in {wait:.0f}s, or when the "
                    "semaphore changes", wake_on_change=True)
    return Step(Kind.LOCK, reason="taking a reboot slot")


def next_backoff(previous: float) -> float:
    """5 s after the first failure, then doubling, capped at 5 minutes."""
    if previous <= 0:
        return INITIAL_BACKOFF
    return min(previous * 2, MAX_BACKOFF)
