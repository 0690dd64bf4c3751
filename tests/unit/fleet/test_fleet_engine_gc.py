"""Unit-file collection: only files unused (at one modifiedIndex) for the minimum age go."""

from __future__ import annotations

from flotilla.daemons.fleet.engine import collectable


def test_unused_file_goes_after_min_age_only() -> None:
    doomed, table = collectable({"a": 5, "b": 6}, {"b"}, {}, now=100.0, min_age=60)
    assert doomed == [] and table == {("a", 5): 100.0}
    doomed, table = collectable({"a": 5, "b": 6}, {"b"}, table, now=159.0, min_age=60)
    assert doomed == []
    doomed, table = collectable({"a": 5, "b": 6}, {"b"}, table, now=160.0, min_age=60)
    assert doomed == [("a", 5)] and table == {}


def test_rewritten_file_restarts_the_clock() -> None:
    _, table = collectable({"a": 5}, set(), {}, now=0.0, min_age=60)
    doomed, table = collectable({"a": 9}, set(), table, now=70.0, min_age=60)
    assert doomed == [] and table == {("a", 9): 70.0}


def test_file_referenced_again_is_forgotten() -> None:
    _, table = collectable({"a": 5}, set(), {}, now=0.0, min_age=60)
    doomed, table = collectable({"a": 5}, {"a"}, table, now=70.0, min_age=60)
    assert doomed == [] and table == {}
