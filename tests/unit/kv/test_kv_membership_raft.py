"""Membership changes proposed on a follower reach the leader's Raft core (pure cores)."""

from __future__ import annotations

from flotilla.daemons.raft.codec import encode_conf_change
from flotilla.daemons.raft.messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
)

from tests.unit.raft.harness import Cluster


def forwarded(frm: int, to: int, *entries: Entry) -> Message:
    return Message(MessageType.PROP, to=to, from_=frm, entries=entries)


def conf_entry(kind: ConfChangeType, node: int) -> Entry:
    return Entry(term=0, index=1, type=EntryType.CONF_CHANGE,
                 data=encode_conf_change(ConfChange(kind, node, b"ctx")))


def test_a_forwarded_add_is_appended_as_a_membership_change_and_applied_everywhere() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    c.nodes[2].step(forwarded(2, 2, conf_entry(ConfChangeType.ADD_VOTER, 4)))
    c.deliver()  # the follower passes the PROP on to the leader, which commits it
    assert any(e.type is EntryType.CONF_CHANGE for e in leader.log.slice(
        leader.log.offset + 1, leader.log.last_index() + 1))
    for node in c.nodes.values():
        assert 4 in node.voters


def test_normal_entries_in_the_same_forward_are_still_appended() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    before = leader.log.last_index()
    leader.step(forwarded(2, 1, Entry(0, 1, data=b"payload"),
                          conf_entry(ConfChangeType.REMOVE_NODE, 3)))
    types = [e.type for e in leader.log.slice(before + 1, leader.log.last_index() + 1)]
    assert types == [EntryType.NORMAL, EntryType.CONF_CHANGE]


def test_a_second_forwarded_change_while_one_is_pending_is_dropped() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    leader.step(forwarded(2, 1, conf_entry(ConfChangeType.ADD_VOTER, 4)))
    pending = leader.log.last_index()
    leader.step(forwarded(3, 1, conf_entry(ConfChangeType.ADD_VOTER, 5)))
    assert leader.log.last_index() == pending
    c.deliver()
    assert 4 in leader.voters and 5 not in leader.voters


def test_a_forwarded_change_that_would_leave_no_voter_is_dropped() -> None:
    c = Cluster(1)
    leader = c.elect(1)
    last = leader.log.last_index()
    leader.step(forwarded(2, 1, conf_entry(ConfChangeType.REMOVE_NODE, 1)))
    assert leader.log.last_index() == last
