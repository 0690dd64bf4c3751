"""etcd's strict reconfiguration rules, as pure decisions over voters/started/connected."""

from __future__ import annotations

import pytest
from flotilla.daemons.kv.reconfig import (
    NOT_ENOUGH_STARTED,
    UNHEALTHY,
    ReconfigRefused,
    check_add,
    check_remove,
)

A, B, C, D = 1, 2, 3, 4


def refused(call, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ReconfigRefused) as err:
        call(*args)
    return str(err.value)


def test_a_lone_started_member_may_always_grow_to_two() -> None:
    check_add({A}, {A}, {A})


def test_an_add_needs_a_quorum_of_started_members_after_it() -> None:
    # Two voters, the second added but not started yet: 1 started of 3 is no quorum.
    assert refused(check_add, {A, B}, {A}, {A, B}) == NOT_ENOUGH_STARTED
    check_add({A, B}, {A, B}, {A, B})
    # Four voters after adding to three: quorum 3 started needed.
    assert refused(check_add, {A, B, C}, {A, B}, {A, B, C}) == NOT_ENOUGH_STARTED
    check_add({A, B, C}, {A, B, C}, {A, B, C})


def test_an_add_needs_every_voter_connected() -> None:
    assert refused(check_add, {A, B, C}, {A, B, C}, {A, B}) == UNHEALTHY


def test_removing_a_member_that_is_down_is_allowed() -> None:
    check_remove({A, B, C}, {A, B, C}, {A, B}, C)


def test_a_remove_that_leaves_fewer_connected_members_than_quorum_is_unhealthy() -> None:
    # C is down: removing B leaves {A, C} with only A connected.
    assert refused(check_remove, {A, B, C}, {A, B, C}, {A, B}, B) == UNHEALTHY
    # Everyone up: fine, also removing oneself.
    check_remove({A, B, C}, {A, B, C}, {A, B, C}, B)
    check_remove({A, B, C}, {A, B, C}, {A, B, C}, A)
    # Two voters, both up: shrinking to one is fine.
    check_remove({A, B}, {A, B}, {A, B}, B)


def test_a_remove_needs_a_quorum_of_started_members_left() -> None:
    # D never started: removing C leaves {A, B, D} with 2 started, quorum 2: fine;
    # with B not started either, only A is started of three: refused.
    check_remove({A, B, C, D}, {A, B, C}, {A, B, C, D}, C)
    assert refused(check_remove, {A, B, C, D}, {A, C}, {A, B, C, D}, C) == NOT_ENOUGH_STARTED


def test_the_flag_is_on_by_default_and_turns_off_like_etcds() -> None:
    from flotilla.daemons.kv.config import ConfigError, parse_config

    assert parse_config([], environ={}).strict_reconfig_check is True
    assert parse_config(["--strict-reconfig-check=false"], environ={}
                        ).strict_reconfig_check is False
    assert parse_config([], environ={"ETCD_STRICT_RECONFIG_CHECK": "false"}
                        ).strict_reconfig_check is False
    with pytest.raises(ConfigError, match="--strict-reconfig-check: 'maybe'"):
        parse_config(["--strict-reconfig-check=maybe"], environ={})
