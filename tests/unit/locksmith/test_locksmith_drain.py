"""Drain hooks and fleet departures: the pure decisions, no bus, store or clock."""

from __future__ import annotations

from datetime import datetime

import pytest
from flotilla.daemons.locksmith.config import daemon_settings
from flotilla.daemons.locksmith.decide import Kind, Strategy, next_step
from flotilla.daemons.locksmith.drain import (
    DEFAULT_DRAIN_TIMEOUT,
    DrainConfigError,
    UnitResult,
    parse_drain_units,
    verdict,
)
from flotilla.daemons.locksmith.semaphore import (
    FLEET_MACHINES,
    Renewal,
    Semaphore,
    departed_holders,
    fleet_machine_ids,
)
from flotilla.daemons.locksmith.window import parse_window
from flotilla.daemons.update.config import ConfigError

pytestmark = pytest.mark.unit

NOW = datetime(2027, 1, 5, 4, 30)


def test_unit_lists_split_on_spaces_and_commas_in_order() -> None:
    assert parse_drain_units(" a.service,b.target  c@1.service ") == (
        "a.service", "b.target", "c@1.service")
    assert parse_drain_units("") == ()


@pytest.mark.parametrize("bad", ["nosuffix", "@x.service", "a.service;rm", "x.scope"])
def test_names_that_cannot_be_started_are_refused(bad: str) -> None:
    with pytest.raises(DrainConfigError):
        parse_drain_units(bad)


def test_every_unit_must_end_done() -> None:
    units = ("a.service", "b.service")
    ok = verdict(units, [UnitResult("a.service", "done"), UnitResult("b.service", "done")])
    assert ok.ok
    failed = verdict(units, [UnitResult("a.service", "done"),
                             UnitResult("b.service", "failed", "exit 3")])
    assert not failed.ok
    assert "b.service" in failed.reason and "failed" in failed.reason
    assert "exit 3" in failed.reason


def test_a_unit_never_tried_fails_the_drain() -> None:
    result = verdict(("a.service", "b.service"), [UnitResult("a.service", "done")])
    assert not result.ok
    assert "b.service was not started" in result.reason


def test_a_timeout_fails_the_drain() -> None:
    result = verdict(("a.service",), [UnitResult("a.service", "timeout", "60s")])
    assert not result.ok and "timeout" in result.reason


def test_no_units_is_no_drain() -> None:
    assert verdict((), []).ok


def test_the_drain_comes_after_the_lock_and_before_the_reboot() -> None:
    lock = next_step(Strategy.ETCD_LOCK, need_reboot=True, window=None, now=NOW,
                     holding=False, drain_pending=True)
    assert lock.kind is Kind.LOCK
    drain = next_step(Strategy.ETCD_LOCK, need_reboot=True, window=None, now=NOW,
                      holding=True, drain_pending=True)
    assert drain.kind is Kind.DRAIN
    reboot = next_step(Strategy.ETCD_LOCK, need_reboot=True, window=None, now=NOW,
                       holding=True, drain_pending=False)
    assert reboot.kind is Kind.REBOOT
    plain = next_step(Strategy.REBOOT, need_reboot=True, window=None, now=NOW,
                      holding=False, drain_pending=True)
    assert plain.kind is Kind.DRAIN


def test_no_drain_outside_the_window() -> None:
    window = parse_window("04:00", "10m")
    step = next_step(Strategy.ETCD_LOCK, need_reboot=True, window=window, now=NOW,
                     holding=True, drain_pending=True)
    assert step.kind is Kind.RELEASE


def test_after_a_failed_drain_the_slot_is_gone_and_the_lock_waits_for_the_backoff() -> None:
    step = next_step(Strategy.ETCD_LOCK, need_reboot=True, window=None, now=NOW,
                     holding=False, backoff=5.0, drain_pending=True)
    assert step.kind is Kind.WAIT and step.seconds == 5.0


def test_settings_name_the_drain_and_departure_variables() -> None:
    s = daemon_settings([], {"LOCKSMITHD_DRAIN_UNITS": "x.service y.service",
                             "LOCKSMITHD_DRAIN_TIMEOUT": "90s",
                             "LOCKSMITHD_RECLAIM_DEPARTED": "0s"}, [])
    assert s.drain_units == ("x.service", "y.service")
    assert s.drain_timeout == 90.0
    assert s.reclaim_departed == 0.0
    default = daemon_settings([], {}, [("/etc/coreos/update.conf",
                                        "LOCKSMITHD_DRAIN_UNITS=z.target\n")])
    assert default.drain_units == ("z.target",)
    assert default.drain_timeout == DEFAULT_DRAIN_TIMEOUT
    assert default.reclaim_departed is None
    flags = daemon_settings(["-drain-units", "f.service", "-drain-timeout", "2m"], {}, [])
    assert flags.drain_units == ("f.service",) and flags.drain_timeout == 120.0


@pytest.mark.parametrize("env", [{"LOCKSMITHD_DRAIN_UNITS": "bad"},
                                 {"LOCKSMITHD_DRAIN_TIMEOUT": "0s"},
                                 {"LOCKSMITHD_DRAIN_TIMEOUT": "soon"},
                                 {"LOCKSMITHD_RECLAIM_DEPARTED": "-1s"}])
def test_bad_drain_settings_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        daemon_settings([], env, [])


def test_fleet_machine_ids_are_those_with_an_object_key() -> None:
    keys = [f"{FLEET_MACHINES}/aa/object", f"{FLEET_MACHINES}/bb/metadata/region",
            f"{FLEET_MACHINES}/cc/object", "/other/dd/object",
            f"{FLEET_MACHINES}/ee/object/deeper"]
    assert fleet_machine_ids(keys) == {"aa", "cc"}


def held(*holders: str) -> Semaphore:
    return Semaphore(3 - len(holders), 3, list(holders))


def test_a_holder_gone_from_fleet_and_silent_for_the_grace_has_departed() -> None:
    sem = held("gone", "here", "rebooting")
    renewals = [Renewal("gone", 100.0), Renewal("rebooting", 990.0)]
    assert departed_holders(sem, {"here", "other"}, renewals, 1000.0, 60.0) == ["gone"]


def test_a_holder_without_a_renewal_is_judged_on_fleet_alone() -> None:
    assert departed_holders(held("old", "here"), {"here"}, [], 1000.0, 60.0) == ["old"]


def test_no_fleet_list_means_nobody_departed() -> None:
    assert departed_holders(held("a"), None, [], 1000.0, 0.0) == []
    assert departed_holders(held("a"), set(), [], 1000.0, 0.0) == []


def test_only_the_lock_back_off_wakes_on_a_semaphore_change() -> None:
    retry = next_step(Strategy.ETCD_LOCK, need_reboot=True, window=None, now=NOW,
                      holding=False, backoff=20.0)
    assert retry.kind is Kind.WAIT and retry.wake_on_change and retry.seconds == 20.0
    window = parse_window("06:00", "1h")
    outside = next_step(Strategy.ETCD_LOCK, need_reboot=True, window=window, now=NOW,
                        holding=False)
    assert outside.kind is Kind.WAIT and not outside.wake_on_change
