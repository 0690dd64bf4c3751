"""The rollout decision for one update check, and the status machine Omaha events drive.

Everything here is a function of its arguments: the time comes in as ``now`` (seconds since
the epoch) and the group's counts as :class:`RolloutStats`, which the store reads inside the
same transaction that writes the grant, so a rate limit cannot be overrun by checks that
arrive together. Each :class:`Decision` carries a :class:`Reason` and a sentence naming the
numbers behind it, because the most common complaint about CoreUpdate and Nebraska was
machines held back by a limit nobody could see.

The order of the checks is Nebraska's (``updates.go GetUpdatePackage``) so groups behave as
their operators expect; where Nebraska left instances stuck (an update in progress that
never finishes), a grant lapses after the group's update timeout.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from ..update.codes import EventResult, EventType
from ..update.omaha import DEFERRING_APP_STATUSES
from .model import (
    IN_FLIGHT,
    UNLIMITED_UPDATES,
    Channel,
    Group,
    InstanceApp,
    InstanceStatus,
    OfficeHours,
    Package,
    newer,
    version_key,
)


def _deferring(status: str) -> str:
    """An app status clients read as "held back by policy"; the strings live in omaha.py."""
    if status not in DEFERRING_APP_STATUSES:
        raise KeyError(status)
    return status


UPDATES_DISABLED = _deferring("error-updatesDisabled")
PERIOD_LIMIT = _deferring("error-maxUpdatesPerPeriodLimitReached")
CONCURRENT_LIMIT = _deferring("error-maxConcurrentUpdatesLimitReached")
TIMED_OUT_LIMIT = _deferring("error-maxTimedOutUpdatesLimitReached")
IN_PROGRESS = _deferring("error-updateInProgressOnInstance")
#: Nebraska's answer when a group's channel has no package (not a deferral: a setup fault).
NO_PACKAGE = "error-noPackageFound"

#: Event 800/1: an app updater installed the package but completion waits on the instance.
EVENT_INSTALL_PREVENTED = 800


class Reason(enum.Enum):
    """Why a check was answered as it was; the value is the API's spelling."""

    GRANTED = "granted"
    FLOOR_FIRST = "floor_first"
    REOFFERED = "reoffered"
    UP_TO_DATE = "up_to_date"
    PAUSED = "paused"
    OFFICE_HOURS = "office_hours"
    RATE_LIMIT = "rate_limit"
    CONCURRENT_LIMIT = "concurrent_limit"
    TIMED_OUT = "timed_out"
    IN_PROGRESS = "in_progress"
    NO_PACKAGE = "no_package"
    BLACKLISTED = "blacklisted"


@dataclasses.dataclass(frozen=True)
class RolloutStats:
    """A group's counts at ``now``, as Nebraska's ``GetGroupUpdatesStats`` defines them.

    ``granted_in_period``: instances whose last grant is later than ``now - period``;
    ``oldest_grant_in_period`` the earliest of those grants (when the next slot frees).
    ``in_progress``: updates granted within the update timeout and not finished.
    ``timed_out``: updates still unfinished after the timeout.
    ``attempted_target``: some instance already finished an attempt at the channel's
    version (completed or failed); until then safe mode lets a single canary through.
    """

    granted_in_period: int = 0
    in_progress: int = 0
    timed_out: int = 0
    attempted_target: bool = False
    oldest_grant_in_period: float | None = None


@dataclasses.dataclass(frozen=True)
class Manifest:
    """One step offered: the package, and whether it is a floor or the channel's target."""

    package: Package
    is_floor: bool = False
    floor_reason: str = ""
    is_target: bool = False


@dataclasses.dataclass(frozen=True)
class Decision:
    """The answer to one check and the instance as it stands afterwards."""

    reason: Reason
    detail: str
    instance: InstanceApp
    manifests: tuple[Manifest, ...] = ()
    app_status: str = "ok"
    disable_group: bool = False
    completed: bool = False
    retry_at: float | None = None

    @property
    def granted(self) -> bool:
        return bool(self.manifests)


# ---------------------------------------------------------------------------- office hours

#: Nebraska's fixed window: Monday to Friday, 09:00-17:00.
NEBRASKA_HOURS = OfficeHours()

def _local(now: float, zone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, ZoneInfo(zone))


def in_office_hours(now: float, zone: str, window: OfficeHours = NEBRASKA_HOURS) -> bool:
    """True when ``now`` falls inside ``window`` read on the wall clock of ``zone``."""
    local = _local(now, zone)
    minute = local.hour * 60 + local.minute
    day = local.weekday()
    if window.start < window.end:
        return day in window.weekdays and window.start <= minute < window.end
    started_today = day in window.weekdays and minute >= window.start
    started_yesterday = (day - 1) % 7 in window.weekdays and minute < window.end
    return started_today or started_yesterday


def next_office_opening(now: float, zone: str, window: OfficeHours = NEBRASKA_HOURS
                        ) -> float | None:
    """When the window next opens after ``now`` (None if it never does)."""
    tz = ZoneInfo(zone)
    today = _local(now, zone).date()
    for offset in range(9):
        day = today + dt.timedelta(days=offset)
        if day.weekday() not in window.weekdays:
            continue
        opening = dt.datetime.combine(day, dt.time(window.start // 60, window.start % 60),
                                      tzinfo=tz).timestamp()
        if opening > now:
            return opening
    return None


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ------------------------------------------------------------------------------- decisions

def _steps(instance: InstanceApp, channel: Channel, target: Package,
           packages: Mapping[str, Package], multi_manifest_ok: bool) -> tuple[Manifest, ...]:
    """Floors still ahead of the instance in version order, then the target.

    Clients that cannot take several manifests get the next floor alone; they come back
    for the following step after their reboot, instead of never moving (as a bare
    ``noupdate`` would leave them).
    """
    floors = []
    for floor in channel.floors:
        package = packages.get(floor.package_id)
        if package is None or channel.id in package.channels_blacklist:
            continue
        if newer(package.version, instance.version) and newer(target.version, package.version):
            floors.append(Manifest(package, is_floor=True, floor_reason=floor.reason))
    floors.sort(key=lambda m: version_key(m.package.version))
    steps = (*floors, Manifest(target, is_target=True))
    return steps if multi_manifest_ok else steps[:1]


def _grant(now: float, instance: InstanceApp, steps: tuple[Manifest, ...], reason: Reason,
           detail: str, completed: bool) -> Decision:
    last = steps[-1].package
    granted = dataclasses.replace(instance, status=InstanceStatus.UPDATE_GRANTED,
                                  update_in_progress=True, last_update_granted=now,
                                  last_update_version=last.version, last_check=now)
    return Decision(reason, detail, granted, manifests=steps, completed=completed)


def decide(now: float, group: Group, channel: Channel | None,
           packages: Mapping[str, Package], instance: InstanceApp, stats: RolloutStats,
           *, multi_manifest_ok: bool = False) -> Decision:
    """Whether ``instance`` (as it is before this check) gets an update now, and why."""
    policy = group.policy
    seen = dataclasses.replace(instance, last_check=now)
    completed = False
    if seen.update_in_progress and seen.last_update_version \
            and not newer(seen.last_update_version, seen.version):
        seen = dataclasses.replace(seen, status=InstanceStatus.COMPLETE, update_in_progress=False)
        completed = True
    lapsed = (seen.update_in_progress and seen.last_update_granted is not None
              and now - seen.last_update_granted >= policy.update_timeout)
    if seen.update_in_progress and not lapsed and seen.status in IN_FLIGHT:
        return Decision(Reason.IN_PROGRESS,
                        f"update to {seen.last_update_version} is {seen.status.label}; "
                        "waiting for it to finish", seen, app_status=IN_PROGRESS,
                        retry_at=(seen.last_update_granted or now) + policy.update_timeout)
    if lapsed:
        seen = dataclasses.replace(seen, update_in_progress=False)
    target = packages.get(channel.package_id or "") if channel is not None else None
    if channel is None or target is None:
        return Decision(Reason.NO_PACKAGE, f"group {group.name} has no channel package",
                        seen, app_status=NO_PACKAGE, completed=completed)
    if channel.id in target.channels_blacklist:
        return Decision(Reason.BLACKLISTED,
                        f"package {target.version} is blacklisted for channel {channel.name}",
                        seen, completed=completed)
    if not newer(target.version, seen.version):
        if seen.status == InstanceStatus.ON_HOLD:
            seen = dataclasses.replace(seen, status=InstanceStatus.UNDEFINED)
        return Decision(Reason.UP_TO_DATE,
                        f"{seen.version} is not older than channel {channel.name}'s "
                        f"{target.version}", seen, completed=completed)
    steps = _steps(seen, channel, target, packages, multi_manifest_ok)
    first = steps[0]
    if first.is_floor:
        reason, words = Reason.FLOOR_FIRST, (
            f"floor {first.package.version} first ({first.floor_reason}) on the way to "
            f"{target.version}")
    else:
        reason, words = Reason.GRANTED, f"update to {target.version} granted"
    if seen.update_in_progress and seen.status == InstanceStatus.UPDATE_GRANTED:
        offered = _grant(now, seen, steps, Reason.REOFFERED,
                         f"{words} (re-offered: the grant is still open)", completed)
        kept = dataclasses.replace(offered.instance,
                                   last_update_granted=seen.last_update_granted)
        return dataclasses.replace(offered, instance=kept)
    held = _enforce(now, group, stats, seen, completed)
    if held is not None:
        return held
    return _grant(now, seen, steps, reason, words, completed)


def _enforce(now: float, group: Group, stats: RolloutStats, seen: InstanceApp,
             completed: bool) -> Decision | None:
    """Nebraska's ``enforceRolloutPolicy``: None when the policy lets the grant through."""
    policy = group.policy
    if not policy.updates_enabled:
        return Decision(Reason.PAUSED, f"updates are paused for group {group.name}", seen,
                        app_status=UPDATES_DISABLED, completed=completed)
    if policy.office_hours and not in_office_hours(now, policy.timezone, policy.office_window):
        opening = next_office_opening(now, policy.timezone, policy.office_window)
        local = _local(now, policy.timezone).strftime("%a %H:%M")
        detail = f"outside office hours ({local} {policy.timezone})"
        if opening is not None:
            detail += f"; next opening {_when(opening)}"
        return Decision(Reason.OFFICE_HOURS, detail, seen, app_status=UPDATES_DISABLED,
                        completed=completed, retry_at=opening)
    if policy.max_updates_per_period >= UNLIMITED_UPDATES and not policy.safe_mode:
        return None
    limit = policy.max_updates_per_period
    if policy.safe_mode and not stats.attempted_target:
        limit = 1
    hold = dataclasses.replace(seen, status=InstanceStatus.ON_HOLD)
    if stats.granted_in_period >= limit:
        retry = (None if stats.oldest_grant_in_period is None
                 else stats.oldest_grant_in_period + policy.period_interval)
        detail = (f"rate limit: {stats.granted_in_period} updates granted in the last "
                  f"{policy.period_interval:g}s, limit {limit}")
        if retry is not None:
            detail += f"; next slot {_when(retry)}"
        return Decision(Reason.RATE_LIMIT, detail, hold, app_status=PERIOD_LIMIT,
                        completed=completed, retry_at=retry)
    if stats.in_progress >= limit:
        return Decision(Reason.CONCURRENT_LIMIT,
                        f"{stats.in_progress} updates in progress, limit {limit}", hold,
                        app_status=CONCURRENT_LIMIT, completed=completed)
    if policy.safe_mode and stats.timed_out >= limit:
        return Decision(Reason.TIMED_OUT,
                        f"safe mode: {stats.timed_out} updates timed out after "
                        f"{policy.update_timeout:g}s; updates for group {group.name} "
                        "are now paused", hold, app_status=TIMED_OUT_LIMIT,
                        disable_group=True, completed=completed)
    return None


# ---------------------------------------------------------------------------------- events

@dataclasses.dataclass(frozen=True)
class EventOutcome:
    """An event's effect: the instance afterwards, and what the activity feed should say."""

    instance: InstanceApp
    changed: bool
    failed: bool = False
    completed: bool = False


def apply_event(instance: InstanceApp, event_type: int, event_result: int, *,
                os_app: bool = True) -> EventOutcome:
    """The status an Omaha event moves an instance to (Nebraska's ``events.go`` rules).

    Events count only while an update is in progress, so a stray or replayed event cannot
    resurrect a finished one. For the OS app only 3/2 (applied and rebooted into) is a
    completion; 3/1 means installed and waiting for the reboot. Other apps complete at 3/1.
    """
    if not instance.update_in_progress:
        return EventOutcome(instance, False)
    if event_result == EventResult.ERROR:
        failed = dataclasses.replace(instance, status=InstanceStatus.ERROR,
                                     update_in_progress=False)
        return EventOutcome(failed, True, failed=True)
    if event_result not in (EventResult.SUCCESS, EventResult.SUCCESS_REBOOT):
        return EventOutcome(instance, False)
    key = (event_type, event_result)
    status: InstanceStatus | None = None
    if key == (EventType.UPDATE_DOWNLOAD_STARTED, EventResult.SUCCESS):
        status = InstanceStatus.DOWNLOADING
    elif key == (EventType.UPDATE_DOWNLOAD_FINISHED, EventResult.SUCCESS):
        status = InstanceStatus.DOWNLOADED
    elif key == (EVENT_INSTALL_PREVENTED, EventResult.SUCCESS):
        status = InstanceStatus.INSTALLED
    elif key == (EventType.UPDATE_COMPLETE, EventResult.SUCCESS):
        status = InstanceStatus.INSTALLED if os_app else InstanceStatus.COMPLETE
    elif key == (EventType.UPDATE_COMPLETE, EventResult.SUCCESS_REBOOT):
        # Sent with every check; it completes only once the new version is running.
        if newer(instance.last_update_version, instance.version):
            return EventOutcome(instance, False)
        status = InstanceStatus.COMPLETE
    if status is None or status == instance.status:
        return EventOutcome(instance, False)
    done = status == InstanceStatus.COMPLETE
    after = dataclasses.replace(instance, status=status, update_in_progress=not done,
                                version=instance.last_update_version if done
                                else instance.version)
    return EventOutcome(after, True, completed=done)
