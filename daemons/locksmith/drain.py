"""Drain hooks: units locksmithd starts, and that must succeed, before it reboots.

Settings (update.conf, the environment, or the daemon's flags):

* ``LOCKSMITHD_DRAIN_UNITS`` (``-drain-units``): unit names separated by spaces or commas,
  for example ``fleet-drain.service`` (a oneshot that asks fleet to move work away) or a
  target. They are started one after another, in the order given, through systemd's
  manager over D-Bus (``StartUnit`` mode ``replace``, waiting for the job's result).
* ``LOCKSMITHD_DRAIN_TIMEOUT`` (``-drain-timeout``): a Go duration (default ``5m``) for
  all of them together. A oneshot service's start job ends when its command has exited,
  so a hook that hangs is a timeout, not a success.

Why: upstream locksmith rebooted as soon as it held the lock, so anything still running
on the machine was cut off; users scripted draining around it. Here a drain that fails
(a unit's job ends other than ``done``, systemd refuses, or the time runs out) means no
reboot: the slot is given back at once so another machine can use it, the reason is
logged, and the daemon tries again after its usual back-off.

The verdict over the results is pure (:func:`verdict`); :func:`run_drain` is the shell.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence

from ..systemd import Systemd, SystemdError
from ..systemd.errors import JobFailed, JobTimeout

DEFAULT_DRAIN_TIMEOUT = 300.0
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(service|target|socket|timer|path|mount)$")


class DrainConfigError(ValueError):
    pass


def parse_drain_units(text: str) -> tuple[str, ...]:
    """The unit list from its setting; an empty text is no drain at all."""
    names = tuple(part for part in re.split(r"[\s,]+", text.strip()) if part)
    for name in names:
        if not _UNIT_NAME.match(name) or name.startswith("@") or len(name) > 256:
            raise DrainConfigError(f"not a startable unit name: {name!r}")
    return names


@dataclasses.dataclass(frozen=True)
class UnitResult:
    """What happened to one drain unit: ``done`` or a failure outcome and its detail."""

    unit: str
    outcome: str           # "done", a job result ("failed", "timeout", ...), or "error"
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def verdict(units: Sequence[str], results: Sequence[UnitResult]) -> Verdict:
    """Reboot only if every configured unit was started and its job ended ``done``.

    A unit with no result (the time ran out before it was tried) fails the drain too.
    """
    seen = {r.unit: r for r in results}
    for unit in units:
        result = seen.get(unit)
        if result is None:
            return Verdict(False, f"drain unit {unit} was not started "
                                  "(no time left, or systemd could not be reached)")
        if result.outcome != "done":
            detail = f": {result.detail}" if result.detail else ""
            return Verdict(False, f"drain unit {unit} did not succeed ({result.outcome}){detail}")
    if not units:
        return Verdict(True, "no drain units configured")
    return Verdict(True, f"drained: {', '.join(units)}")


async def run_drain(systemd: Systemd, units: Sequence[str], timeout: float,
                    clock: Callable[[], float] = time.monotonic) -> list[UnitResult]:
    """Starts each unit in turn within ``timeout`` seconds overall; stops at the first
    failure (later units would drain a machine that is not going to reboot)."""
    deadline = clock() + timeout
    results: list[UnitResult] = []
    for unit in units:
        remaining = deadline - clock()
        if remaining <= 0:
            break
        try:
            await systemd.start_unit(unit, "replace", timeout=remaining)
        except JobTimeout:
            results.append(UnitResult(unit, "timeout",
                                      f"its start job did not finish within {timeout:.0f}s"))
            break
        except JobFailed as err:
            results.append(UnitResult(unit, err.result, str(err)))
            break
        except (SystemdError, OSError) as err:
            results.append(UnitResult(unit, "error", str(err)))
            break
        results.append(UnitResult(unit, "done"))
    return results
