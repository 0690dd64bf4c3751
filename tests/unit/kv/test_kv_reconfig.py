"""etcd's strict reconfiguration rules, as pure decisions over voters/started/connected.

Every case is judged: an allowed change must come back as allowed (``None``) next to the
smallest change of its input that etcd refuses, so a check that allowed everything would
fail here. The exhaustive test compares every small cluster with etcd 3.4's rules as
``mayAddMember``/``mayRemoveMember`` state them, written out independently below.
"""

from __future__ import annotations

from itertools import chain, combinations

import pytest
from flotilla.daemons.kv.reconfig import (
    NOT_ENOUGH_STARTED,
    UNHEALTHY,
    ReconfigRefused,
    check_add,
    check_remove,
)

A, B, C, D = 1, 2, 3, 4
SELF = A  # the member deciding (etcd's leader); always connected to itself


def verdict(call, *args) -> str | None:  # type: ignore[no-untyped-def]
    """None when the change is allowed, else the reason it is refused."""
    try:
        assert call(*args) is None
    except ReconfigRefused as err:
        return str(err)
    return None


def test_a_lone_started_member_may_always_grow_to_two() -> None:
    assert verdict(check_add, {A}, {A}, {A}) is None
    # The exception is for a started lone member only.
    assert verdict(check_add, {A}, set(), {A}) == NOT_ENOUGH_STARTED


def test_an_add_needs_a_quorum_of_started_members_after_it() -> None:
    # Two voters, the second added but not started yet: 1 started of 3 is no quorum.
    assert verdict(check_add, {A, B}, {A}, {A, B}) == NOT_ENOUGH_STARTED
    assert verdict(check_add, {A, B}, {A, B}, {A, B}) is None
    # Four voters after adding to three: quorum 3 started needed.
    assert verdict(check_add, {A, B, C}, {A, B}, {A, B, C}) == NOT_ENOUGH_STARTED
    assert verdict(check_add, {A, B, C}, {A, B, C}, {A, B, C}) is None


def test_an_add_needs_every_voter_connected() -> None:
    assert verdict(check_add, {A, B, C}, {A, B, C}, {A, B}) == UNHEALTHY


def test_removing_a_member_that_is_down_is_allowed() -> None:
    assert verdict(check_remove, {A, B, C}, {A, B, C}, {A, B}, C) is None
    # A member that is down may go however few of the others are up; one that is up
    # may not when too few would be left (D up, B and C down).
    assert verdict(check_remove, {A, B, C}, {A, B, C}, {A, C}, B) is None
    assert verdict(check_remove, {A, B, C}, {A, B, C}, {A}, C) is None
    assert verdict(check_remove, {A, B, C, D}, {A, B, C, D}, {A, D}, D) == UNHEALTHY


def test_a_remove_that_leaves_fewer_connected_members_than_quorum_is_unhealthy() -> None:
    # C is down: removing B leaves {A, C} with only A connected.
    assert verdict(check_remove, {A, B, C}, {A, B, C}, {A, B}, B) == UNHEALTHY
    # Everyone up: fine, also removing oneself.
    assert verdict(check_remove, {A, B, C}, {A, B, C}, {A, B, C}, B) is None
    assert verdict(check_remove, {A, B, C}, {A, B, C}, {A, B, C}, A) is None
    # ... but not oneself when only one other member is up: oneself is never "down".
    assert verdict(check_remove, {A, B, C}, {A, B, C}, {A, B}, A) == UNHEALTHY
    # Two voters, both up: shrinking to one is fine; with B down, B may go too.
    assert verdict(check_remove, {A, B}, {A, B}, {A, B}, B) is None
    assert verdict(check_remove, {A, B}, {A, B}, {A}, B) is None


def test_a_remove_needs_a_quorum_of_started_members_left() -> None:
    # D never started: removing C leaves {A, B, D} with 2 started, quorum 2: fine;
    # with B not started either, only A is started of three: refused.
    assert verdict(check_remove, {A, B, C, D}, {A, B, C}, {A, B, C, D}, C) is None
    assert verdict(check_remove, {A, B, C, D}, {A, C}, {A, B, C, D}, C) == NOT_ENOUGH_STARTED


def _subsets(items: set[int]) -> list[set[int]]:
    ordered = sorted(items)
    return [set(c) for c in chain.from_iterable(combinations(ordered, n)
                                                for n in range(len(ordered) + 1))]


def _etcd_add(voters: set[int], started: set[int], connected: set[int]) -> str | None:
    """etcd 3.4 ``mayAddMember``: ``IsReadyToAddVotingMember`` then full connectivity."""
    members = len(voters) + 1
    n_started = len(started & voters)
    if not (n_started == 1 and members == 2) and n_started < members // 2 + 1:
        return NOT_ENOUGH_STARTED
    if voters - connected:
        return UNHEALTHY
    return None


def _etcd_remove(voters: set[int], started: set[int], connected: set[int],
                 member: int) -> str | None:
    """etcd 3.4 ``mayRemoveMember``: ``IsReadyToRemoveVotingMember``, then a down member
    (never oneself) may go, else the active members minus one must keep a quorum."""
    rest = voters - {member}
    if len(started & rest) < len(rest) // 2 + 1:
        return NOT_ENOUGH_STARTED
    if member != SELF and member not in connected:
        return None
    active = len(connected & voters)
    if active - 1 < 1 + (len(voters) - 1) // 2:
        return UNHEALTHY
    return None


def test_every_small_cluster_is_judged_as_etcd_judges_it() -> None:
    judged = {"allowed": 0, NOT_ENOUGH_STARTED: 0, UNHEALTHY: 0}
    for voters in _subsets({A, B, C, D}):
        if SELF not in voters:
            continue
        for started in _subsets(voters):
            for others_up in _subsets(voters - {SELF}):
                connected = others_up | {SELF}
                want = _etcd_add(voters, started, connected)
                assert verdict(check_add, voters, started, connected) == want, (
                    "add", voters, started, connected)
                judged[want or "allowed"] += 1
                for member in voters:
                    want = _etcd_remove(voters, started, connected, member)
                    got = verdict(check_remove, voters, started, connected, member)
                    assert got == want, ("remove", voters, started, connected, member)
                    judged[want or "allowed"] += 1
    # Each outcome is reached many times, so none of them is judged by accident.
    assert min(judged.values()) > 50, judged


def test_the_flag_is_on_by_default_and_turns_off_like_etcds() -> None:
    from flotilla.daemons.kv.config import ConfigError, parse_config

    assert parse_config([], environ={}).strict_reconfig_check is True
    assert parse_config(["--strict-reconfig-check=false"], environ={}
                        ).strict_reconfig_check is False
    assert parse_config([], environ={"ETCD_STRICT_RECONFIG_CHECK": "false"}
                        ).strict_reconfig_check is False
    with pytest.raises(ConfigError, match="--strict-reconfig-check: 'maybe'"):
        parse_config(["--strict-reconfig-check=maybe"], environ={})
