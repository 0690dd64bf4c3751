"""The status machine and the check schedule, step by step against update_engine's rules."""

from __future__ import annotations

import itertools

import pytest
from flotilla.daemons.update.codes import Status
from flotilla.daemons.update.schedule import CheckSchedule, ScheduleConfig
from flotilla.daemons.update.status import (
    VERSION_UNKNOWN,
    ResetNotAllowed,
    StatusMachine,
)

HAPPY_PATH = [Status.CHECKING_FOR_UPDATE, Status.UPDATE_AVAILABLE, Status.DOWNLOADING,
              Status.FINALIZING, Status.UPDATED_NEED_REBOOT]


def test_a_successful_update_walks_upstreams_order_and_writes_the_marker() -> None:
    machine = StatusMachine(marker_present=False)
    assert machine.startup().broadcast.as_tuple() == (0, 0.0, "UPDATE_STATUS_IDLE",
                                                      VERSION_UNKNOWN, 0)
    seen = []
    for step, status in enumerate(HAPPY_PATH):
        if status is Status.UPDATE_AVAILABLE:
            machine.checked(1_700_000_000)
            machine.offered("3602.2.0", 1 << 20)
        effects = machine.move(status, now=float(step))
        seen.append(effects.broadcast.current_operation)
        assert effects.write_marker == (status is Status.UPDATED_NEED_REBOOT)
    assert seen == [s.value for s in HAPPY_PATH]
    assert machine.snapshot().as_tuple() == (1_700_000_000, 1.0,
                                             "UPDATE_STATUS_UPDATED_NEED_REBOOT",
                                             "3602.2.0", 1 << 20)


def test_every_step_update_engine_never_takes_is_refused() -> None:
    allowed = {(Status.IDLE, Status.CHECKING_FOR_UPDATE)} | set(itertools.pairwise(HAPPY_PATH))
    allowed |= {(Status.CHECKING_FOR_UPDATE, Status.IDLE),
                (Status.DOWNLOADING, Status.VERIFYING), (Status.VERIFYING, Status.FINALIZING),
                (Status.UPDATED_NEED_REBOOT, Status.IDLE),
                (Status.REPORTING_ERROR_EVENT, Status.IDLE)}
    allowed |= {(s, Status.REPORTING_ERROR_EVENT) for s in
                (Status.CHECKING_FOR_UPDATE, Status.UPDATE_AVAILABLE, Status.DOWNLOADING,
                 Status.VERIFYING, Status.FINALIZING)}
    refused = 0
    for source, target in itertools.product(Status, Status):
        machine = StatusMachine(marker_present=False)
        machine.status = source
        if (source, target) in allowed:
            assert machine.move(target, 0.0).broadcast.current_operation == target.value
        else:
            with pytest.raises(ValueError, match="cannot become"):
                machine.move(target, 0.0)
            assert machine.status is source
            refused += 1
    assert refused == len(Status) ** 2 - len(allowed)


def test_marker_from_before_a_restart_starts_in_need_reboot() -> None:
    machine = StatusMachine(marker_present=True)
    assert machine.startup().broadcast.current_operation == "UPDATE_STATUS_UPDATED_NEED_REBOOT"


def test_download_progress_is_announced_per_percent_or_ten_seconds() -> None:
    machine = StatusMachine(marker_present=False)
    for status in HAPPY_PATH[:3]:
        machine.move(status, now=100.0)
    total = 10_000
    assert machine.downloaded(50, total, now=101.0).broadcast is None  # 0.5 %, 1 s
    announced = machine.downloaded(100, total, now=101.5).broadcast  # 1 %
    assert announced is not None and announced.progress == pytest.approx(0.01)
    assert machine.downloaded(150, total, now=111.0).broadcast is None  # 9.5 s later
    late = machine.downloaded(160, total, now=111.5).broadcast  # 10 s since the last one
    assert late is not None and late.progress == pytest.approx(0.016)
    assert machine.downloaded(total, total, now=111.6).broadcast.progress == 1.0
    machine.status = Status.IDLE
    with pytest.raises(ValueError, match="progress reported while"):
        machine.downloaded(1, total, now=112.0)


def test_reset_status_only_from_idle_or_need_reboot() -> None:
    machine = StatusMachine(marker_present=True)
    machine.offered("3602.2.0", 5)
    effects = machine.reset(now=0.0)
    assert effects.remove_marker and not effects.write_marker
    assert effects.broadcast.as_tuple()[2:] == ("UPDATE_STATUS_IDLE", VERSION_UNKNOWN, 0)
    assert machine.reset(now=0.0).broadcast is None  # IDLE: nothing to do
    for status in set(Status) - {Status.IDLE, Status.UPDATED_NEED_REBOOT}:
        machine.status = status
        with pytest.raises(ResetNotAllowed, match=r"^Reset not allowed in this state\.$"):
            machine.reset(now=0.0)
        assert machine.status is status


def test_schedule_defaults_are_update_engines() -> None:
    schedule = CheckSchedule(ScheduleConfig())
    first = schedule.first(now=0.0, random01=0.5)
    assert (first.at, first.interval, first.fuzz) == (420.0, 420.0, 600.0)
    assert schedule.first(0.0, 0.0).at == 120.0 and schedule.first(0.0, 0.999).at < 720.0
    periodic = schedule.after(1000.0, 0.5)
    assert (periodic.at, periodic.reason) == (1000.0 + 2700.0, "periodic check")
    assert schedule.after(0.0, 0.0).at == 2700.0 - 300.0


def test_server_poll_interval_backoff_and_quick_retry() -> None:
    schedule = CheckSchedule(ScheduleConfig())
    asked = schedule.after(0.0, 0.5, poll_interval=7200)
    assert (asked.at, asked.fuzz, asked.reason) == (7200.0, 7200.0, "server asked for 7200 s")
    short = schedule.after(0.0, 0.5, poll_interval=60)
    assert short.interval == 2700.0 and "raised to period" in short.reason
    doubled = [schedule.after(0.0, 0.5, http_status=503).interval for _ in range(5)]
    assert doubled == [5400.0, 10800.0, 14400.0, 14400.0, 14400.0]
    assert schedule.after(0.0, 0.5, http_status=503).reason == "back-off after HTTP 503 (capped)"
    quick = schedule.after(0.0, 0.5, quick=True)
    assert (quick.interval, quick.reason) == (60.0, "quick retry after a failed attempt")
    assert schedule.after(0.0, 0.5, http_status=404).interval == 2700.0


def test_short_schedules_for_tests_and_bad_settings() -> None:
    config = ScheduleConfig(initial=1, period=2, fuzz=0, quick=1, max_backoff=8)
    schedule = CheckSchedule(config)
    assert schedule.first(10.0, 0.7).at == 11.0
    assert schedule.after(10.0, 0.3).at == 12.0
    with pytest.raises(ValueError, match="period must be positive"):
        ScheduleConfig(period=0)
    with pytest.raises(ValueError, match="fuzz must not be negative"):
        ScheduleConfig(fuzz=-1)
    with pytest.raises(ValueError, match="max_backoff"):
        ScheduleConfig(period=100, max_backoff=10)
