"""Agent task planning: what systemd is asked to do, and in which order."""

from __future__ import annotations

from flotilla.daemons.fleet.agentplan import LocalUnit, Task, plan
from flotilla.daemons.fleet.scheduler import Assignment


def kinds(tasks: list[Task]) -> list[tuple[str, str]]:
    return [(t.kind, t.unit) for t in tasks]


def test_new_launched_unit_loads_reloads_then_starts() -> None:
    tasks = plan({"a.service": Assignment("h1", "launched")}, {})
    assert kinds(tasks) == [("load", "a.service"), ("reload", ""), ("start", "a.service")]
    assert tasks[0].unit_hash == "h1"


def test_new_loaded_unit_is_not_started() -> None:
    assert kinds(plan({"a.service": Assignment("h1", "loaded")}, {})) == [
        ("load", "a.service"), ("reload", "")]


def test_launched_to_loaded_stops_without_reload() -> None:
    tasks = plan({"a.service": Assignment("h1", "loaded")},
                 {"a.service": LocalUnit("h1", "launched")})
    assert kinds(tasks) == [("stop", "a.service")]


def test_loaded_to_launched_starts() -> None:
    tasks = plan({"a.service": Assignment("h1", "launched")},
                 {"a.service": LocalUnit("h1", "loaded")})
    assert kinds(tasks) == [("start", "a.service")]


def test_unit_no_longer_assigned_is_unloaded() -> None:
    tasks = plan({}, {"a.service": LocalUnit("h1", "launched")})
    assert kinds(tasks) == [("unload", "a.service"), ("reload", "")]
    tasks = plan({"a.service": Assignment("h1", "inactive")},
                 {"a.service": LocalUnit("h1", "loaded")})
    assert kinds(tasks) == [("unload", "a.service"), ("reload", "")]


def test_changed_hash_unloads_before_loading_and_starting() -> None:
    tasks = plan({"a.service": Assignment("h2", "launched")},
                 {"a.service": LocalUnit("h1", "launched")})
    assert kinds(tasks) == [("unload", "a.service"), ("load", "a.service"), ("reload", ""),
                            ("start", "a.service")]


def test_in_sync_means_no_tasks() -> None:
    assert plan({"a.service": Assignment("h1", "launched")},
                {"a.service": LocalUnit("h1", "launched")}) == []


def test_order_stops_then_unloads_then_loads_then_starts() -> None:
    tasks = plan(
        {"b.service": Assignment("h", "loaded"), "c.service": Assignment("h", "launched")},
        {"a.service": LocalUnit("h", "loaded"), "b.service": LocalUnit("h", "launched")},
    )
    assert kinds(tasks) == [("stop", "b.service"), ("unload", "a.service"),
                            ("load", "c.service"), ("reload", ""), ("start", "c.service")]
