"""The D-Bus adapter's pure part: unit object paths back to unit names."""

from __future__ import annotations

import pytest
from flotilla.daemons.fleet.systemd_dbus import name_from_path
from flotilla.daemons.systemd.manager import unit_path
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize("name", ["hello.service", "web@1.service", "a-b_c:d.socket",
                                  "0start.timer", "x\\x2d.mount"])
def test_path_round_trip(name: str) -> None:
    assert name_from_path(unit_path(name)) == name


@given(st.text(alphabet="abcXYZ019_-.@:\\", min_size=1, max_size=30))
def test_path_round_trip_property(name: str) -> None:
    assert name_from_path(unit_path(name)) == name


def test_foreign_paths_are_ignored() -> None:
    assert name_from_path("/org/freedesktop/systemd1/job/12") is None
    assert name_from_path("/org/freedesktop/systemd1/unit/bad_zz") is None
