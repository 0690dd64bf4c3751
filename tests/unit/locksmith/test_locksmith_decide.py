"""Strategy decisions and settings resolution, without a bus, a store or a clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from flotilla.daemons.locksmith.config import (
    DEFAULT_ENDPOINTS,
    UsageError,
    daemon_settings,
    parse_flags,
)
from flotilla.daemons.locksmith.decide import (
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    Kind,
    Strategy,
    StrategyError,
    effective,
    next_backoff,
    next_step,
    parse_strategy,
)
from flotilla.daemons.locksmith.window import parse_window
from flotilla.daemons.update.config import ConfigError

WINDOW = parse_window("04:00", "1h")
INSIDE = datetime(2027, 1, 5, 4, 30)
BEFORE = datetime(2027, 1, 5, 3, 0)
AFTER = datetime(2027, 1, 5, 5, 0, 1)


def step(strategy: Strategy, **kw):
    kw.setdefault("need_reboot", True)
    kw.setdefault("window", None)
    kw.setdefault("now", INSIDE)
    kw.setdefault("holding", False)
    return next_step(strategy, **kw)


def test_strategies_parse_as_locksmith_with_empty_meaning_reboot() -> None:
    assert parse_strategy("") is Strategy.REBOOT
    for name in ("etcd-lock", "reboot", "off", "best-effort"):
        assert parse_strategy(name).value == name
    with pytest.raises(StrategyError, match="unknown strategy: sometimes"):
        parse_strategy("sometimes")


def test_best_effort_is_etcd_lock_only_where_a_store_runs() -> None:
    assert effective(Strategy.BEST_EFFORT, True) is Strategy.ETCD_LOCK
    assert effective(Strategy.BEST_EFFORT, False) is Strategy.REBOOT
    assert effective(Strategy.OFF, True) is Strategy.OFF


def test_nothing_happens_without_a_need_or_with_off() -> None:
    assert step(Strategy.ETCD_LOCK, need_reboot=False).kind is Kind.IDLE
    assert step(Strategy.OFF).kind is Kind.IDLE


def test_reboot_strategy_reboots_without_a_lock_and_etcd_lock_locks_first() -> None:
    assert step(Strategy.REBOOT).kind is Kind.REBOOT
    assert step(Strategy.ETCD_LOCK).kind is Kind.LOCK
    assert step(Strategy.ETCD_LOCK, holding=True).kind is Kind.REBOOT


def test_outside_the_window_it_waits_for_the_start() -> None:
    for strategy in (Strategy.REBOOT, Strategy.ETCD_LOCK):
        before = step(strategy, window=WINDOW, now=BEFORE)
        assert (before.kind, before.seconds) == (Kind.WAIT, 3600)
        after = step(strategy, window=WINDOW, now=AFTER)
        assert after.kind is Kind.WAIT
        assert AFTER + timedelta(seconds=after.seconds) == datetime(2027, 1, 6, 4, 0)


def test_a_lock_won_after_the_window_closed_is_given_back_not_used() -> None:
    assert step(Strategy.ETCD_LOCK, window=WINDOW, now=AFTER, holding=True).kind is Kind.RELEASE
    assert step(Strategy.ETCD_LOCK, window=WINDOW, now=INSIDE, holding=True).kind is Kind.REBOOT


def test_a_failed_lock_backs_off_but_never_past_the_window_end() -> None:
    owed = step(Strategy.ETCD_LOCK, backoff=MAX_BACKOFF)
    assert (owed.kind, owed.seconds) == (Kind.WAIT, MAX_BACKOFF)
    near_end = datetime(2027, 1, 5, 4, 59, 0)
    capped = step(Strategy.ETCD_LOCK, window=WINDOW, now=near_end, backoff=MAX_BACKOFF)
    assert (capped.kind, capped.seconds) == (Kind.WAIT, 61.0)
    # and at that moment the window is closed: the next decision waits for tomorrow
    later = near_end + timedelta(seconds=capped.seconds)
    assert step(Strategy.ETCD_LOCK, window=WINDOW, now=later).kind is Kind.WAIT


def test_backoff_is_5s_doubling_to_5_minutes() -> None:
    seen, value = [], 0.0
    for _ in range(9):
        value = next_backoff(value)
        seen.append(value)
    assert seen == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert (INITIAL_BACKOFF, MAX_BACKOFF) == (5.0, 300.0)


def test_settings_precedence_files_then_environment_then_flags() -> None:
    files = [("/usr/share/coreos/update.conf", "REBOOT_STRATEGY=reboot\nGROUP=stable\n"),
             ("/etc/coreos/update.conf", "REBOOT_STRATEGY=etcd-lock\n"
              "REBOOT_WINDOW_START='Thu 04:00'\nREBOOT_WINDOW_LENGTH=1h\n")]
    got = daemon_settings([], {}, files)
    assert got.strategy is Strategy.ETCD_LOCK
    assert got.window == parse_window("Thu 04:00", "1h")
    assert got.store.endpoints == DEFAULT_ENDPOINTS
    env = {"REBOOT_STRATEGY": "off", "LOCKSMITHD_REBOOT_WINDOW_START": "05:00",
           "LOCKSMITHD_REBOOT_WINDOW_LENGTH": "2h", "LOCKSMITHD_ENDPOINT": "http://a:1,http://b:2",
           "LOCKSMITHD_GROUP": "web"}
    got = daemon_settings([], env, files)
    assert (got.strategy, got.window, got.store.group) == (
        Strategy.OFF, parse_window("05:00", "2h"), "web")
    assert got.store.endpoints == ("http://a:1", "http://b:2")
    got = daemon_settings(["--endpoint=http://c:3", "-group", "db", "-reboot-strategy=reboot",
                           "-reclaim-after", "30m"], env, files)
    assert (got.strategy, got.store.group, got.store.endpoints, got.reclaim_after) == (
        Strategy.REBOOT, "db", ("http://c:3",), 1800.0)


def test_locksmithd_variables_in_update_conf_count_as_environment() -> None:
    files = [("/etc/coreos/update.conf", "LOCKSMITHD_ENDPOINT=http://f:1\nLOCKSMITHD_GROUP=g1\n")]
    got = daemon_settings([], {}, files)
    assert (got.store.endpoints, got.store.group) == (("http://f:1",), "g1")
    got = daemon_settings([], {"LOCKSMITHD_GROUP": "g2"}, files)
    assert got.store.group == "g2"


def test_window_settings_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="Either both or neither"):
        daemon_settings([], {"REBOOT_WINDOW_START": "04:00"}, [])
    with pytest.raises(ConfigError, match=r"Error parsing reboot window: .*exceed period"):
        daemon_settings([], {"REBOOT_WINDOW_START": "04:00", "REBOOT_WINDOW_LENGTH": "25h"}, [])
    with pytest.raises(ConfigError, match="REBOOT_STRATEGY: unknown strategy: x"):
        daemon_settings([], {"REBOOT_STRATEGY": "x"}, [])
    with pytest.raises(ConfigError, match=r"/etc/coreos/update\.conf:2"):
        daemon_settings([], {}, [("/etc/coreos/update.conf", "A=1\nnot a setting\n")])


def test_go_flag_habits() -> None:
    flags = parse_flags(["-endpoint", "http://a:1, http://b:2", "--endpoint=http://c:3",
                         "-debug", "status", "-x"], {"endpoint": True, "debug": False})
    assert flags.endpoints == ["http://a:1", "http://b:2", "http://c:3"]
    assert flags.values == {"debug": "true"}
    assert flags.args == ["status", "-x"]
    with pytest.raises(UsageError, match="flag provided but not defined: -nope"):
        parse_flags(["-nope"], {})
    with pytest.raises(UsageError, match="flag needs an argument: -endpoint"):
        parse_flags(["-endpoint"], {"endpoint": True})


def test_tls_with_a_ca_alone_is_accepted_and_a_key_without_cert_refused() -> None:
    got = daemon_settings(["-etcd-cafile", "/ca.pem"], {}, [])
    assert (got.store.cafile, got.store.certfile) == ("/ca.pem", None)
    with pytest.raises(UsageError, match="-etcd-keyfile needs -etcd-certfile"):
        daemon_settings(["-etcd-keyfile", "/k.pem"], {}, [])
