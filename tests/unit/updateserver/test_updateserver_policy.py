"""The rollout decision and the event status machine, every branch with fixed times."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from flotilla.daemons.updateserver import policy
from flotilla.daemons.updateserver.model import (
    Channel,
    Floor,
    Group,
    InstanceApp,
    InstanceStatus,
    OfficeHours,
    Package,
    Policy,
    newer,
)
from flotilla.daemons.updateserver.policy import Reason, RolloutStats, decide

APP = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"
P1 = Package("p1", APP, "1.0.0", "update.gz", 100)
P2 = Package("p2", APP, "2.0.0", "update.gz", 200)
P3 = Package("p3", APP, "3.0.0", "update.gz", 300)
PACKAGES = {p.id: p for p in (P1, P2, P3)}
CHANNEL = Channel("c", APP, "stable", package_id="p3")
EMPTY = RolloutStats()


def at(text: str, zone: str = "UTC") -> float:
    """A wall-clock time in ``zone`` as epoch seconds."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


# Wednesday 2026-12-02 10:00 UTC: inside Nebraska's office hours.
NOW = at("2026-12-02T10:00:00")


def group(**policy_fields: object) -> Group:
    return Group("g", APP, "stable", "c", "stable", Policy(**policy_fields))  # type: ignore[arg-type]


def instance(version: str = "1.0.0", **fields: object) -> InstanceApp:
    return InstanceApp("m1", APP, "g", version, **fields)  # type: ignore[arg-type]


def check(g: Group | None = None, inst: InstanceApp | None = None,
          stats: RolloutStats = EMPTY, *, channel: Channel | None = CHANNEL,
          now: float = NOW, multi: bool = False) -> policy.Decision:
    return decide(now, g or group(), channel, PACKAGES, inst or instance(), stats,
                  multi_manifest_ok=multi)


def test_a_fresh_instance_is_granted_the_channel_package() -> None:
    d = check()
    assert d.reason is Reason.GRANTED and d.app_status == "ok"
    assert [m.package.id for m in d.manifests] == ["p3"] and d.manifests[0].is_target
    assert d.instance.status is InstanceStatus.UPDATE_GRANTED
    assert d.instance.update_in_progress and d.instance.last_update_granted == NOW
    assert d.instance.last_update_version == "3.0.0" and d.instance.last_check == NOW


@pytest.mark.parametrize("version", ["3.0.0", "3.0", "3.1.0", "4.0.0-rc1"])
def test_up_to_date_or_newer_gets_no_update(version: str) -> None:
    d = check(inst=instance(version))
    assert d.reason is Reason.UP_TO_DATE and not d.granted and d.app_status == "ok"
    assert "3.0.0" in d.detail


def test_up_to_date_releases_an_on_hold_instance() -> None:
    d = check(inst=instance("3.0.0", status=InstanceStatus.ON_HOLD))
    assert d.instance.status is InstanceStatus.UNDEFINED


@pytest.mark.parametrize("channel", [None, Channel("c", APP, "stable"),
                                     Channel("c", APP, "stable", package_id="gone")])
def test_no_package_is_nebraskas_error(channel: Channel | None) -> None:
    d = check(channel=channel)
    assert d.reason is Reason.NO_PACKAGE and d.app_status == "error-noPackageFound"


def test_a_blacklisted_package_is_never_offered_on_that_channel() -> None:
    packages = dict(PACKAGES, p3=dataclasses.replace(P3, channels_blacklist=("c",)))
    d = decide(NOW, group(), CHANNEL, packages, instance(), RolloutStats())
    assert d.reason is Reason.BLACKLISTED and not d.granted and "stable" in d.detail


def test_pause_holds_everything_with_updates_disabled() -> None:
    d = check(group(updates_enabled=False))
    assert d.reason is Reason.PAUSED and d.app_status == "error-updatesDisabled"
    assert d.instance.status is InstanceStatus.UNDEFINED and not d.granted


# ------------------------------------------------------------------------ office hours

@pytest.mark.parametrize(("when", "zone", "inside"), [
    ("2026-12-02T09:00:00", "UTC", True),    # Wednesday, opening minute
    ("2026-12-02T16:59:59", "UTC", True),
    ("2026-12-02T17:00:00", "UTC", False),   # closing is exclusive
    ("2026-12-02T08:59:59", "UTC", False),
    ("2026-12-05T10:00:00", "UTC", False),   # Saturday
    ("2026-12-07T09:30:00", "UTC", True),    # Monday
    # 10:00 UTC Wednesday is 19:00 in Tokyo and 05:00 in New York: both closed.
    ("2026-12-02T19:00:00", "Asia/Tokyo", False),
    ("2026-12-02T05:00:00", "America/New_York", False),
    # 23:30 UTC Friday is 08:30 Saturday in Tokyo: a weekend there.
    ("2026-12-05T08:30:00", "Asia/Tokyo", False),
    # 14:00 UTC Monday is 09:00 in New York: opens there.
    ("2026-12-07T09:00:00", "America/New_York", True),
])
def test_nebraska_office_hours_read_in_the_group_time_zone(when: str, zone: str,
                                                          inside: bool) -> None:
    assert policy.in_office_hours(at(when, zone), zone) is inside
    d = check(group(office_hours=True, timezone=zone), now=at(when, zone))
    assert (d.reason is Reason.GRANTED) is inside
    if not inside:
        assert d.reason is Reason.OFFICE_HOURS and d.app_status == "error-updatesDisabled"
        assert zone in d.detail and d.retry_at is not None and d.retry_at > at(when, zone)


def test_the_same_instant_is_inside_in_one_zone_and_outside_in_another() -> None:
    instant = at("2026-12-02T15:00:00")  # 10:00 New York, 00:00 Tokyo (Thursday)
    assert policy.in_office_hours(instant, "America/New_York")
    assert not policy.in_office_hours(instant, "Asia/Tokyo")


NIGHT = OfficeHours(start=22 * 60, end=6 * 60, weekdays=frozenset({4}))  # Friday night


@pytest.mark.parametrize(("when", "inside"), [
    ("2026-12-04T21:59:00", False),  # Friday before the window
    ("2026-12-04T22:00:00", True),
    ("2026-12-05T00:00:00", True),   # past midnight: still Friday's window
    ("2026-12-05T05:59:00", True),
    ("2026-12-05T06:00:00", False),
    ("2026-12-05T23:00:00", False),  # Saturday's own night is not in the window
    ("2026-12-04T02:00:00", False),  # Friday early morning belongs to Thursday: closed
])
def test_a_window_across_midnight_belongs_to_the_day_it_starts(when: str, inside: bool) -> None:
    assert policy.in_office_hours(at(when, "Europe/Berlin"), "Europe/Berlin", NIGHT) is inside


def test_next_opening_skips_the_weekend_and_follows_the_zone() -> None:
    saturday = at("2026-12-05T12:00:00", "America/New_York")
    opening = policy.next_office_opening(saturday, "America/New_York")
    assert opening == at("2026-12-07T09:00:00", "America/New_York")
    assert policy.next_office_opening(NOW, "UTC", OfficeHours(weekdays=frozenset())) is None


def test_office_hours_follow_daylight_saving_time() -> None:
    # Berlin leaves summer time on 2026-10-25: 08:30 UTC is 10:30 before, 09:30 after.
    before, after = at("2026-10-23T07:30:00"), at("2026-10-26T07:30:00")
    assert policy.in_office_hours(before, "Europe/Berlin")      # 09:30 CEST
    assert not policy.in_office_hours(after, "Europe/Berlin")   # 08:30 CET


# ---------------------------------------------------------------------------- rate limits

def test_rate_limit_holds_at_the_limit_and_says_when_the_next_slot_frees() -> None:
    stats = RolloutStats(granted_in_period=3, oldest_grant_in_period=NOW - 100)
    d = check(group(max_updates_per_period=3, period_interval=600), stats=stats)
    assert d.reason is Reason.RATE_LIMIT
    assert d.app_status == "error-maxUpdatesPerPeriodLimitReached"
    assert d.instance.status is InstanceStatus.ON_HOLD and not d.instance.update_in_progress
    assert d.retry_at == NOW + 500 and "3 updates granted" in d.detail and "limit 3" in d.detail


def test_one_below_the_limit_is_granted() -> None:
    d = check(group(max_updates_per_period=3), stats=RolloutStats(granted_in_period=2))
    assert d.reason is Reason.GRANTED


def test_concurrent_limit_counts_unfinished_updates() -> None:
    stats = RolloutStats(granted_in_period=0, in_progress=2)
    d = check(group(max_updates_per_period=2), stats=stats)
    assert d.reason is Reason.CONCURRENT_LIMIT
    assert d.app_status == "error-maxConcurrentUpdatesLimitReached"
    assert d.instance.status is InstanceStatus.ON_HOLD


def test_unlimited_ignores_every_count_outside_safe_mode() -> None:
    stats = RolloutStats(granted_in_period=10**6, in_progress=10**6, timed_out=10**6)
    assert check(group(max_updates_per_period=900_000), stats=stats).granted
    d = check(group(max_updates_per_period=900_000, safe_mode=True), stats=stats)
    assert d.reason is Reason.RATE_LIMIT


def test_safe_mode_lets_one_canary_through_first() -> None:
    g = group(safe_mode=True, max_updates_per_period=10)
    assert check(g, stats=RolloutStats()).granted
    d = check(g, stats=RolloutStats(granted_in_period=1))
    assert d.reason is Reason.RATE_LIMIT and "limit 1" in d.detail
    # Once the target has been attempted, the group's own limit applies again.
    assert check(g, stats=RolloutStats(granted_in_period=1, attempted_target=True)).granted


def test_safe_mode_pauses_the_group_after_timed_out_updates() -> None:
    g = group(safe_mode=True, max_updates_per_period=2)
    d = check(g, stats=RolloutStats(attempted_target=True, timed_out=2))
    assert d.reason is Reason.TIMED_OUT and d.disable_group
    assert d.app_status == "error-maxTimedOutUpdatesLimitReached"
    assert not check(group(max_updates_per_period=2),
                     stats=RolloutStats(attempted_target=True, timed_out=2)).disable_group


def test_policy_order_is_nebraskas() -> None:
    """Every combination of pause, office hours, limits and safe mode: the first rule
    that applies in Nebraska's order is the reason given."""
    closed = at("2026-12-05T10:00:00")  # Saturday
    for enabled, office, safe, period_full, busy, timed_out in itertools.product(
            (True, False), (True, False), (True, False), (True, False), (True, False),
            (True, False)):
        g = group(updates_enabled=enabled, office_hours=office, safe_mode=safe,
                  max_updates_per_period=2)
        stats = RolloutStats(granted_in_period=2 if period_full else 0,
                             in_progress=2 if busy else 0, timed_out=2 if timed_out else 0,
                             attempted_target=True)
        d = check(g, stats=stats, now=closed)
        if not enabled:
            expected = Reason.PAUSED
        elif office:
            expected = Reason.OFFICE_HOURS
        elif period_full:
            expected = Reason.RATE_LIMIT
        elif busy:
            expected = Reason.CONCURRENT_LIMIT
        elif safe and timed_out:
            expected = Reason.TIMED_OUT
        else:
            expected = Reason.GRANTED
        assert d.reason is expected, (enabled, office, safe, period_full, busy, timed_out)
        assert d.granted is (expected is Reason.GRANTED)
        assert d.detail


# -------------------------------------------------------------------------- grants in flight

def granted(status: InstanceStatus, ago: float, version: str = "1.0.0") -> InstanceApp:
    return instance(version, status=status, update_in_progress=True,
                    last_update_granted=NOW - ago, last_update_version="3.0.0")


@pytest.mark.parametrize("status", [InstanceStatus.DOWNLOADING, InstanceStatus.DOWNLOADED,
                                    InstanceStatus.INSTALLED])
def test_an_update_in_flight_is_not_granted_again(status: InstanceStatus) -> None:
    d = check(group(update_timeout=3600), granted(status, 60))
    assert d.reason is Reason.IN_PROGRESS and d.app_status == "error-updateInProgressOnInstance"
    assert d.instance.status is status and d.retry_at == NOW - 60 + 3600


def test_an_open_grant_is_reoffered_without_spending_a_slot() -> None:
    full = RolloutStats(granted_in_period=5)
    d = check(group(max_updates_per_period=1), granted(InstanceStatus.UPDATE_GRANTED, 60), full)
    assert d.reason is Reason.REOFFERED and d.granted
    assert d.instance.last_update_granted == NOW - 60  # the timeout runs from the first grant


def test_a_grant_lapses_after_the_update_timeout_and_policy_applies_again() -> None:
    stuck = granted(InstanceStatus.DOWNLOADED, 3600)
    d = check(group(update_timeout=3600), stuck)
    assert d.reason is Reason.GRANTED and d.instance.last_update_granted == NOW
    held = check(group(update_timeout=3600, updates_enabled=False), stuck)
    assert held.reason is Reason.PAUSED and not held.instance.update_in_progress
    assert check(group(update_timeout=3601), stuck).reason is Reason.IN_PROGRESS


def test_running_the_granted_version_completes_the_grant() -> None:
    d = check(inst=granted(InstanceStatus.INSTALLED, 60, version="3.0.0"))
    assert d.completed and d.reason is Reason.UP_TO_DATE
    assert d.instance.status is InstanceStatus.COMPLETE and not d.instance.update_in_progress


# --------------------------------------------------------------------------------- floors

FLOORED = dataclasses.replace(CHANNEL, floors=(Floor("p2", "schema change"),
                                               Floor("p1")))


def test_a_legacy_client_takes_the_next_floor_alone() -> None:
    d = check(inst=instance("0.9.0"), channel=FLOORED)
    assert d.reason is Reason.FLOOR_FIRST
    assert [m.package.version for m in d.manifests] == ["1.0.0"]
    assert d.manifests[0].is_floor and "1.0.0" in d.detail and "3.0.0" in d.detail
    assert d.instance.last_update_version == "1.0.0"


def test_a_multi_manifest_client_gets_every_floor_in_order_then_the_target() -> None:
    d = check(inst=instance("0.9.0"), channel=FLOORED, multi=True)
    assert [(m.package.version, m.is_floor, m.is_target) for m in d.manifests] == [
        ("1.0.0", True, False), ("2.0.0", True, False), ("3.0.0", False, True)]
    assert d.manifests[1].floor_reason == "schema change"
    assert d.instance.last_update_version == "3.0.0"


def test_floors_behind_the_instance_are_skipped() -> None:
    d = check(inst=instance("2.0.0"), channel=FLOORED)
    assert d.reason is Reason.GRANTED and [m.package.id for m in d.manifests] == ["p3"]
    d = check(inst=instance("1.5.0"), channel=FLOORED)
    assert [m.package.id for m in d.manifests] == ["p2"]


def test_floors_obey_the_policy_too() -> None:
    d = check(group(updates_enabled=False), instance("0.9.0"), channel=FLOORED)
    assert d.reason is Reason.PAUSED


# --------------------------------------------------------------------------------- events

def in_flight(status: InstanceStatus = InstanceStatus.UPDATE_GRANTED,
              version: str = "1.0.0") -> InstanceApp:
    return granted(status, 10, version)


@pytest.mark.parametrize(("event", "status"), [
    ((13, 1), InstanceStatus.DOWNLOADING), ((14, 1), InstanceStatus.DOWNLOADED),
    ((3, 1), InstanceStatus.INSTALLED), ((800, 1), InstanceStatus.INSTALLED),
])
def test_events_move_an_update_along(event: tuple[int, int], status: InstanceStatus) -> None:
    out = policy.apply_event(in_flight(), *event)
    assert out.changed and out.instance.status is status and out.instance.update_in_progress


def test_the_os_app_completes_on_3_2_from_the_new_version_only() -> None:
    installed = in_flight(InstanceStatus.INSTALLED)
    assert not policy.apply_event(installed, 3, 2).changed  # still running 1.0.0
    done = policy.apply_event(dataclasses.replace(installed, version="3.0.0"), 3, 2)
    assert done.completed and done.instance.status is InstanceStatus.COMPLETE
    assert not done.instance.update_in_progress


def test_other_apps_complete_on_3_1() -> None:
    out = policy.apply_event(in_flight(), 3, 1, os_app=False)
    assert out.completed and out.instance.version == "3.0.0"
    assert out.instance.status is InstanceStatus.COMPLETE


@pytest.mark.parametrize("event", [(3, 0), (13, 0), (14, 0)])
def test_an_error_result_fails_the_update(event: tuple[int, int]) -> None:
    out = policy.apply_event(in_flight(InstanceStatus.DOWNLOADING), *event)
    assert out.failed and out.instance.status is InstanceStatus.ERROR
    assert not out.instance.update_in_progress


@pytest.mark.parametrize("event", [(13, 1), (3, 0), (3, 2), (14, 1)])
def test_events_outside_an_update_change_nothing(event: tuple[int, int]) -> None:
    idle = instance("1.0.0", status=InstanceStatus.COMPLETE)
    out = policy.apply_event(idle, *event)
    assert not out.changed and out.instance == idle


def test_deferred_and_unknown_events_change_nothing() -> None:
    assert not policy.apply_event(in_flight(), 3, 9).changed
    assert not policy.apply_event(in_flight(), 42, 1).changed
    assert not policy.apply_event(in_flight(InstanceStatus.DOWNLOADING), 13, 1).changed


def test_the_whole_status_machine_for_update_engines_sequence() -> None:
    d = check()
    inst = d.instance
    for event, status in (((13, 1), InstanceStatus.DOWNLOADING),
                          ((14, 1), InstanceStatus.DOWNLOADED),
                          ((3, 1), InstanceStatus.INSTALLED)):
        inst = policy.apply_event(inst, *event).instance
        assert inst.status is status
    rebooted = dataclasses.replace(inst, version="3.0.0")
    inst = policy.apply_event(rebooted, 3, 2).instance
    assert inst.status is InstanceStatus.COMPLETE
    assert check(inst=inst, now=NOW + 60).reason is Reason.UP_TO_DATE


def test_versions_order_like_semver() -> None:
    assert newer("3510.2.1", "3510.2.0") and newer("10.0.0", "9.9.9")
    assert newer("1.0.0", "1.0.0-rc.2") and newer("1.0.0-rc.10", "1.0.0-rc.2")
    assert not newer("1.0.0+build7", "1.0.0") and not newer("1.0", "1.0.0")
    assert newer("0.0.1", "not a version")
