"""Scenario tests for each feature of the Raft core, driven by hand through `Cluster`."""

from __future__ import annotations

import random

import pytest
from flotilla.daemons.raft.core import Config, RaftNode
from flotilla.daemons.raft.messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    HardState,
    Message,
    MessageType,
    NotLeader,
    PersistedState,
    ProposalDropped,
    Role,
    Snapshot,
    SnapshotMeta,
)

from .harness import Cluster, drop_types, isolate

MT = MessageType


def settle(c: Cluster, ticks: int = 3) -> None:
    c.tick_all(ticks)


# -- elections ------------------------------------------------------------------------


def test_single_node_elects_itself_and_commits() -> None:
    c = Cluster(1)
    node = c.elect(1)
    assert node.role is Role.LEADER
    node.propose(b"a")
    c.process_all()
    assert c.data_applied(1) == [b"a"]


def test_three_nodes_elect_exactly_one_leader_by_ticking() -> None:
    c = Cluster(3)
    for _ in range(40):
        c.tick_all()
        if c.leader_ids():
            break
    leaders = c.leader_ids()
    assert len(leaders) == 1
    lead = leaders[0]
    assert all(n.lead == lead for n in c.nodes.values())
    assert len({n.term for n in c.nodes.values()}) == 1


def test_randomized_election_timeout_range_and_campaign_moment() -> None:
    cfg = Config(election_tick=10)
    seen = set()
    for seed in range(200):
        node = RaftNode(1, peers=(1, 2, 3), config=cfg, rng=random.Random(seed))
        seen.add(node.randomized_timeout)
    assert seen == set(range(10, 20))
    node = RaftNode(1, peers=(1, 2, 3), config=cfg, rng=random.Random(7))
    rd = node.ready()
    node.advance(rd)
    for _ in range(node.randomized_timeout - 1):
        node.tick()
    assert node.role is Role.FOLLOWER
    node.tick()
    assert node.role is Role.PRE_CANDIDATE
    msgs = node.ready().messages
    assert sorted((m.type, m.to, m.term) for m in msgs) == [
        (MT.PRE_VOTE, 2, 2),
        (MT.PRE_VOTE, 3, 2),
    ]


def test_vote_survives_restart_and_is_not_given_twice() -> None:
    c = Cluster(3)
    c.nodes[1].campaign()
    c.process_all()
    vote_req = next(m for m in c.queue if m.to == 2 and m.type is MT.PRE_VOTE)
    c.queue.clear()
    c.nodes[2].step(vote_req)
    c.process_all()
    c.queue.clear()
    # Real vote for node 1 in term 2.
    c.nodes[2].step(Message(MT.VOTE, to=2, from_=1, term=2, log_term=1, index=1))
    c.process(2)
    assert c.disks[2].hard == HardState(term=2, vote=1, commit=1)
    c.crash(2)
    restarted = c.restart(2)
    c.queue.clear()
    restarted.step(Message(MT.VOTE, to=2, from_=3, term=2, log_term=1, index=1))
    c.process(2)
    reply = [m for m in c.queue if m.to == 3]
    assert [(m.type, m.reject) for m in reply] == [(MT.VOTE_RESP, True)]


def test_candidate_with_stale_log_loses() -> None:
    c = Cluster(3)
    c.elect(1)
    c.crash(3)
    c.nodes[1].propose(b"x")
    c.deliver()
    c.restart(3)
    c.crash(1)
    c.nodes[3].campaign()  # PreVote: node 2 has a longer log and refuses
    c.deliver()
    assert c.nodes[3].role is not Role.LEADER
    assert c.nodes[3].term == c.nodes[2].term


# -- PreVote and CheckQuorum ----------------------------------------------------------


def _partitioned_follower_rejoins(pre_vote: bool) -> tuple[Cluster, int]:
    c = Cluster(3, pre_vote=pre_vote, check_quorum=False)
    c.elect(1)
    term_before = c.nodes[1].term
    cut = isolate(3)
    c.tick_all(60, keep=cut)
    assert c.nodes[1].role is Role.LEADER
    c.tick_all(3)  # heal
    return c, term_before


def test_prevote_keeps_partitioned_node_from_disrupting_leader() -> None:
    c, term_before = _partitioned_follower_rejoins(pre_vote=True)
    assert c.nodes[1].role is Role.LEADER
    assert c.nodes[1].term == term_before
    assert c.nodes[3].term == term_before


def test_without_prevote_partitioned_node_disrupts_leader() -> None:
    c, term_before = _partitioned_follower_rejoins(pre_vote=False)
    assert max(n.term for n in c.nodes.values()) > term_before + 1


def test_check_quorum_leader_steps_down_when_cut_off() -> None:
    c = Cluster(3, check_quorum=True)
    c.elect(1)
    c.tick_all(c.config.election_tick * 2 + 1, keep=isolate(1))
    assert c.nodes[1].role is Role.FOLLOWER
    with pytest.raises(NotLeader):
        c.nodes[1].propose(b"lost")


def test_without_check_quorum_cut_off_leader_stays_leader() -> None:
    c = Cluster(3, check_quorum=False, pre_vote=True)
    c.elect(1)
    c.tick_all(c.config.election_tick * 2 + 1, keep=isolate(1))
    assert c.nodes[1].role is Role.LEADER


def test_check_quorum_follower_ignores_vote_while_leader_is_alive() -> None:
    c = Cluster(3, check_quorum=True, pre_vote=False)
    c.elect(1)
    term = c.nodes[2].term
    c.nodes[2].step(Message(MT.VOTE, to=2, from_=3, term=term + 5, log_term=9, index=99))
    c.process(2)
    assert c.nodes[2].term == term
    assert not [m for m in c.queue if m.to == 3]


def test_transfer_context_bypasses_lease() -> None:
    c = Cluster(3, check_quorum=True, pre_vote=False)
    c.elect(1)
    term = c.nodes[2].term
    last = c.nodes[2].log.last_index()
    c.nodes[2].step(
        Message(
            MT.VOTE, to=2, from_=3, term=term + 1, log_term=term, index=last, context=b"transfer"
        )
    )
    c.process(2)
    assert c.nodes[2].term == term + 1
    assert c.nodes[2].vote == 3


# -- replication ----------------------------------------------------------------------


def test_follower_proposal_refused_with_leader_identity() -> None:
    c = Cluster(3)
    c.elect(2)
    with pytest.raises(NotLeader) as err:
        c.nodes[1].propose(b"x")
    assert err.value.leader == 2


def test_replication_commits_and_applies_everywhere_in_order() -> None:
    c = Cluster(5)
    c.elect(1)
    for k in range(20):
        c.nodes[1].propose(b"v%d" % k)
        c.deliver()
    settle(c)
    expected = [b"v%d" % k for k in range(20)]
    for node_id in c.nodes:
        assert c.data_applied(node_id) == expected


def test_commit_needs_majority() -> None:
    c = Cluster(5)
    c.elect(1)
    c.crash(4)
    c.crash(5)
    c.crash(3)
    c.nodes[1].propose(b"x")
    c.deliver()
    assert c.data_applied(1) == []
    c.restart(3)
    c.tick_all(3)
    assert c.data_applied(1) == [b"x"]


def _log_state(terms: list[int]) -> tuple[Snapshot, tuple[Entry, ...]]:
    snap = Snapshot(SnapshotMeta(1, 1, (1, 2, 3), ()), b"")
    entries = tuple(Entry(t, i + 2, data=b"e%d" % i) for i, t in enumerate(terms))
    return snap, entries


def test_fast_backtracking_needs_few_rejections() -> None:
    # Node 3 holds 50 uncommitted entries of term 3 that the term-4 log replaced.
    long_good = [2] * 30 + [4] * 30
    divergent = [2] * 30 + [3] * 50
    states = {}
    for node_id, terms, term in ((1, long_good, 4), (2, long_good, 4), (3, divergent, 3)):
        snap, entries = _log_state(terms)
        states[node_id] = PersistedState(HardState(term, 0, 31), entries, snap)
    c = Cluster.from_disks(states)
    c.elect(1)
    settle(c)
    rejects = [m for m in c.sent if m.type is MT.APP_RESP and m.reject and m.from_ == 3]
    assert len(rejects) == 1  # one probe finds the match point, not one per entry
    node1, node3 = c.nodes[1], c.nodes[3]
    assert [(e.index, e.term) for e in node3.log.entries] == [
        (e.index, e.term) for e in node1.log.entries
    ]
    assert node3.log.committed == node1.log.committed == node1.log.last_index()


def test_lagging_follower_catches_up_with_one_probe() -> None:
    c = Cluster(3)
    c.elect(1)
    c.crash(3)
    for k in range(40):
        c.nodes[1].propose(b"%d" % k)
        c.deliver()
    c.restart(3)
    c.sent.clear()
    settle(c)
    rejects = [m for m in c.sent if m.type is MT.APP_RESP and m.reject and m.from_ == 3]
    assert len(rejects) <= 1
    assert len(c.data_applied(3)) == 40


def test_proposals_between_readies_are_batched_into_one_append() -> None:
    c = Cluster(3)
    c.elect(1)
    c.sent.clear()
    c.nodes[1].propose_many([b"a", b"b"])
    for k in range(8):
        c.nodes[1].propose(b"%d" % k)
    c.process(1)
    apps = [m for m in c.sent if m.type is MT.APP and m.entries]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(len(m.entries) == 10 for m in apps)


def test_flow_control_caps_messages_in_flight() -> None:
    c = Cluster(3, max_inflight_msgs=3, max_size_per_msg=1)
    c.elect(1)
    settle(c)
    c.sent.clear()
    no_acks_from_2 = drop_types(MT.APP_RESP, MT.HEARTBEAT_RESP)
    for k in range(10):
        c.nodes[1].propose(b"%d" % k)
        c.deliver(keep=lambda m: m.from_ != 2 or no_acks_from_2(m))
    to_2 = [m for m in c.sent if m.type is MT.APP and m.to == 2 and m.entries]
    to_3 = [m for m in c.sent if m.type is MT.APP and m.to == 3 and m.entries]
    assert len(to_2) == 3
    assert all(len(m.entries) == 1 for m in to_2 + to_3)
    assert len(to_3) == 10
    settle(c)  # acks flow again: node 2 catches up
    assert len(c.data_applied(2)) == 10


def test_flow_control_caps_bytes_in_flight() -> None:
    c = Cluster(3, max_inflight_msgs=100, max_inflight_bytes=250, max_size_per_msg=1)
    c.elect(1)
    settle(c)
    c.sent.clear()
    for k in range(6):
        c.nodes[1].propose(bytes([k]) * 100)
        c.deliver(keep=lambda m: m.from_ != 2 or m.type is not MT.APP_RESP)
    to_2 = [m for m in c.sent if m.type is MT.APP and m.to == 2 and m.entries]
    assert len(to_2) == 3  # 116 + 116 < 250 <= 348 bytes


def test_max_size_per_msg_splits_large_backlog() -> None:
    c = Cluster(3, max_size_per_msg=300)
    c.elect(1)
    c.crash(3)
    for k in range(20):
        c.nodes[1].propose(bytes([k]) * 84)  # 100 bytes each with overhead
        c.deliver()
    c.restart(3)
    c.sent.clear()
    settle(c)
    apps = [m for m in c.sent if m.type is MT.APP and m.to == 3 and m.entries]
    assert max(len(m.entries) for m in apps) == 3
    assert len(c.data_applied(3)) == 20


def test_leader_only_commits_current_term_entries_by_counting() -> None:
    # Node 1 holds entry 2 of term 2 that nobody else has; it wins term 4 and copies it to
    # a majority. Counting replicas of an old-term entry must not commit it (Raft 5.4.2):
    # only once the leader's own term-4 entry reaches a majority does the log commit.
    snap = Snapshot(SnapshotMeta(1, 1, (1, 2, 3), ()), b"")
    states = {
        1: PersistedState(HardState(3, 0, 1), (Entry(2, 2, data=b"old"),), snap),
        2: PersistedState(HardState(3, 0, 1), (), snap),
        3: PersistedState(HardState(3, 0, 1), (), snap),
    }
    c = Cluster.from_disks(states, max_size_per_msg=1)

    def hide_acks_of_new_entry(m: Message) -> bool:
        return not (m.type is MT.APP_RESP and not m.reject and m.index >= 3)

    c.nodes[1].campaign()
    c.deliver(keep=hide_acks_of_new_entry)
    leader = c.nodes[1]
    assert leader.role is Role.LEADER and leader.term == 4
    assert leader.progress[2].match == 2 and leader.progress[3].match == 2
    assert leader.log.committed == 1
    settle(c)
    assert leader.log.committed == 3
    assert c.data_applied(2) == [b"old"]


# -- ReadIndex ------------------------------------------------------------------------


def test_read_index_on_leader_after_quorum_confirms() -> None:
    c = Cluster(3)
    c.elect(1)
    c.nodes[1].propose(b"x")
    c.deliver()
    commit = c.nodes[1].log.committed
    c.nodes[1].read_index(b"r1")
    c.process(1)
    assert c.reads[1] == []  # not before the heartbeat round
    c.deliver()
    assert [(r.index, r.context) for r in c.reads[1]] == [(commit, b"r1")]


def test_many_reads_share_one_heartbeat_round() -> None:
    c = Cluster(5)
    c.elect(1)
    c.sent.clear()
    for k in range(10):
        c.nodes[1].read_index(b"r%d" % k)
    c.deliver()
    heartbeats = [m for m in c.sent if m.type is MT.HEARTBEAT]
    assert len(heartbeats) == 4  # one round: one per follower
    assert sorted(r.context for r in c.reads[1]) == sorted(b"r%d" % k for k in range(10))


def test_read_index_waits_for_commit_in_leaders_term() -> None:
    c = Cluster(3)
    c.nodes[1].campaign()
    c.deliver(keep=drop_types(MT.APP_RESP))  # elected, but its no-op is not committed
    node = c.nodes[1]
    assert node.role is Role.LEADER
    assert node.log.term(node.log.committed) != node.term
    node.read_index(b"early")
    c.deliver(keep=drop_types(MT.APP_RESP))
    assert c.reads[1] == []
    settle(c)
    assert [r.context for r in c.reads[1]] == [b"early"]
    assert c.reads[1][0].index >= node.log.first_index()
    assert node.log.term(c.reads[1][0].index) == node.term


def test_read_index_not_served_by_cut_off_leader() -> None:
    c = Cluster(3, check_quorum=False)
    c.elect(1)
    c.nodes[1].read_index(b"r")
    c.deliver(keep=isolate(1))
    c.tick_all(5, keep=isolate(1))
    assert c.reads[1] == []


def test_read_index_from_follower_goes_through_leader() -> None:
    c = Cluster(3)
    c.elect(1)
    c.nodes[1].propose(b"x")
    c.deliver()
    c.nodes[3].read_index(b"f")
    c.deliver()
    assert [(r.index, r.context) for r in c.reads[3]] == [(c.nodes[1].log.committed, b"f")]


def test_read_index_without_known_leader_refused() -> None:
    c = Cluster(3)
    with pytest.raises(NotLeader):
        c.nodes[2].read_index(b"x")


# -- snapshots ------------------------------------------------------------------------


def test_compacted_leader_sends_snapshot_to_lagging_follower() -> None:
    c = Cluster(3)
    c.elect(1)
    c.crash(3)
    for k in range(30):
        c.nodes[1].propose(b"%d" % k)
        c.deliver()
    leader = c.nodes[1]
    snap = leader.compact(leader.log.applied, b"state-at-%d" % leader.log.applied)
    assert leader.log.first_index() == snap.meta.index + 1
    assert snap.meta.voters == (1, 2, 3)
    for k in range(30, 35):
        leader.propose(b"%d" % k)
        c.deliver()
    c.restart(3)
    c.sent.clear()
    settle(c, 5)
    snaps = [m for m in c.sent if m.type is MT.SNAP and m.to == 3]
    assert len(snaps) == 1
    assert c.disks[3].snapshot.data == snap.data
    assert c.nodes[3].log.committed == leader.log.committed
    assert c.data_applied(3) == [b"%d" % k for k in range(30, 35)]


def test_compact_refuses_unapplied_index() -> None:
    c = Cluster(1)
    c.elect(1)
    with pytest.raises(ValueError, match="index"):
        c.nodes[1].compact(c.nodes[1].log.applied + 1, b"")


def test_restart_from_snapshot_and_log() -> None:
    c = Cluster(3)
    c.elect(1)
    for k in range(10):
        c.nodes[1].propose(b"%d" % k)
        c.deliver()
    settle(c)
    node2 = c.nodes[2]
    node2.compact(node2.log.applied - 3, b"s")
    c.disks[2].snapshot = node2.log.snapshot
    c.disks[2].entries = [e for e in c.disks[2].entries if e.index > node2.log.offset]
    c.crash(2)
    restarted = c.restart(2)
    assert restarted.log.offset == node2.log.offset
    assert restarted.voters == {1, 2, 3}
    assert c.data_applied(2)[-3:] == [b"7", b"8", b"9"]


# -- membership -----------------------------------------------------------------------


def test_conf_change_refused_while_one_is_pending() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    c.tick_all(2)
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ProposalDropped, match="pending"):
        leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    c.deliver()
    assert leader.learners == {4}
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    c.deliver()
    assert leader.learners == {4, 5}


def test_new_leader_refuses_conf_change_until_its_first_entry_is_applied() -> None:
    c = Cluster(3)
    c.nodes[1].campaign()
    c.deliver(keep=drop_types(MT.APP_RESP))
    with pytest.raises(ProposalDropped):
        c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))


def test_learner_receives_log_but_never_votes_or_counts() -> None:
    c = Cluster(3, learners=(4,))
    c.elect(1)
    for _ in range(50):
        c.nodes[4].tick()
    c.process(4)
    assert c.nodes[4].role is Role.FOLLOWER
    assert not [m for m in c.sent if m.from_ == 4 and m.type in (MT.VOTE, MT.PRE_VOTE)]
    assert not [m for m in c.sent if m.to == 4 and m.type in (MT.VOTE, MT.PRE_VOTE)]
    c.nodes[1].propose(b"x")
    c.deliver()
    assert c.data_applied(4) == [b"x"]
    # Leader + learner are not a quorum of the three voters.
    c.crash(2)
    c.crash(3)
    c.nodes[1].propose(b"y")
    c.deliver()
    assert c.data_applied(1) == [b"x"]


def test_learner_joins_catches_up_and_is_promoted() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    for k in range(5):
        leader.propose(b"%d" % k)
        c.deliver()
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    c.deliver()
    c.add_node(4)
    settle(c, 4)
    assert c.data_applied(4) == [b"%d" % k for k in range(5)]
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))
    c.deliver()
    settle(c, 2)
    assert all(n.voters == {1, 2, 3, 4} for n in c.nodes.values())
    c.crash(2)
    leader.propose(b"after")  # 1, 3 and 4 form a quorum of four
    c.deliver()
    assert c.data_applied(4)[-1] == b"after"


def test_removed_leader_steps_down_and_others_elect() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    c.tick_all(2)
    leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    c.deliver()
    assert leader.role is Role.FOLLOWER
    assert 1 not in leader.voters
    for _ in range(60):
        c.tick_all()
        if [i for i in c.leader_ids() if i != 1]:
            break
    assert [i for i in c.leader_ids() if i != 1]
    new = c.nodes[c.leader_ids()[0]]
    assert new.voters == {2, 3}
    new.propose(b"z")
    c.deliver()
    assert c.data_applied(2)[-1:] == [b"z"]


def test_cannot_remove_last_voter() -> None:
    c = Cluster(1)
    c.elect(1)
    with pytest.raises(ValueError, match="last voter"):
        c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))


# -- leadership transfer --------------------------------------------------------------


def test_transfer_leadership_to_up_to_date_follower() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    c.tick_all(2)
    term = leader.term
    leader.transfer_leadership(3)
    c.deliver()
    assert c.leader_ids() == [3]
    assert c.nodes[3].term == term + 1
    assert any(m.type is MT.TIMEOUT_NOW and m.to == 3 for m in c.sent)


def test_transfer_waits_for_lagging_target_and_blocks_proposals() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    c.crash(3)
    leader.propose(b"x")
    c.deliver()
    c.restart(3)
    leader.transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        leader.propose(b"during")
    c.deliver()
    settle(c)
    assert c.leader_ids() == [3]
    assert c.nodes[3].log.committed >= leader.log.committed


def test_transfer_aborts_after_election_timeout() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    c.crash(3)
    leader.transfer_leadership(3)
    assert leader.lead_transferee == 3
    c.tick_all(c.config.election_tick + 1)
    assert leader.lead_transferee == 0
    assert leader.role is Role.LEADER
    leader.propose(b"ok")


def test_transfer_request_from_follower_reaches_leader() -> None:
    c = Cluster(3)
    c.elect(1)
    c.tick_all(2)
    c.nodes[2].transfer_leadership(2)
    c.deliver()
    assert c.leader_ids() == [2]


# -- Ready contract -------------------------------------------------------------------


def test_ready_twice_without_advance_is_an_error() -> None:
    node = RaftNode(1, peers=(1,), rng=random.Random(1))
    node.ready()
    with pytest.raises(RuntimeError):
        node.ready()


def test_bootstrap_ready_persists_membership_snapshot() -> None:
    node = RaftNode(2, peers=(1, 2, 3), learners=(4,), rng=random.Random(1))
    rd = node.ready()
    assert rd.snapshot is not None
    assert rd.snapshot.meta == SnapshotMeta(1, 1, (1, 2, 3), (4,))
    assert rd.hard_state == HardState(1, 0, 1)
    assert rd.must_sync
    node.advance(rd)
    assert node.status().voters == (1, 2, 3)
    assert node.status().learners == (4,)


def test_config_validation_names_field() -> None:
    with pytest.raises(ValueError, match="election_tick"):
        RaftNode(1, peers=(1,), rng=random.Random(1), config=Config(election_tick=1))


def test_election_needs_majority_of_newest_membership_in_log_too() -> None:
    # Node 1 applied {1,2,3} but its log already holds "add voter 4" and "add voter 5"
    # (it has not learnt they committed). A majority of the stale view ({1,2}) must not
    # be enough: a rival could win {3,4,5} of the newer membership in the same term.
    from flotilla.daemons.raft.codec import encode_conf_change
    from flotilla.daemons.raft.messages import EntryType

    snap = Snapshot(SnapshotMeta(1, 1, (1, 2, 3), ()), b"")
    adds = tuple(
        Entry(
            2,
            idx,
            EntryType.CONF_CHANGE,
            encode_conf_change(ConfChange(ConfChangeType.ADD_VOTER, n)),
        )
        for idx, n in ((2, 4), (3, 5))
    )
    states = {
        1: PersistedState(HardState(2, 0, 1), adds, snap),
        2: PersistedState(HardState(2, 0, 1), (), snap),
    }
    c = Cluster.from_disks(states, pre_vote=False)
    c.nodes[1].campaign()
    c.deliver()
    node1 = c.nodes[1]
    assert node1.votes.get(2) is True
    assert node1.role is Role.CANDIDATE
    asked = sorted(m.to for m in c.sent if m.type is MT.VOTE and m.from_ == 1)
    assert asked == [2, 3, 4, 5]


def test_restart_with_applied_index_replays_membership_changes() -> None:
    c = Cluster(3)
    leader = c.elect(1)
    c.tick_all(2)
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    c.deliver()
    leader.propose(b"x")
    c.deliver()
    disk = c.disks[2]
    applied = c.nodes[2].log.applied
    node = RaftNode(2, persisted=disk.state(), rng=random.Random(3), applied=applied)
    assert node.learners == {4}
    rd = node.ready()
    assert rd.committed_entries == ()  # nothing to re-apply
    with pytest.raises(ValueError, match="applied"):
        RaftNode(2, persisted=disk.state(), rng=random.Random(3), applied=applied + 50)


def test_restart_refuses_commit_beyond_stored_entries() -> None:
    c = Cluster(3)
    c.elect(1)
    st = c.disks[2].state()
    broken = PersistedState(HardState(st.hard_state.term, 0, 99), st.entries, st.snapshot)
    with pytest.raises(ValueError, match=r"hard_state\.commit"):
        RaftNode(2, persisted=broken, rng=random.Random(1))


def test_restart_refuses_gap_in_entries() -> None:
    snap = Snapshot(SnapshotMeta(1, 1, (1,), ()), b"")
    entries = (Entry(1, 2), Entry(1, 4))
    with pytest.raises(ValueError, match=r"entries\[1\]\.index"):
        RaftNode(
            1, persisted=PersistedState(HardState(1, 0, 1), entries, snap), rng=random.Random(1)
        )


def test_learner_promotion_refused_until_caught_up() -> None:
    c = Cluster(3, max_learner_lag=5)
    leader = c.elect(1)
    c.tick_all(2)
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    c.deliver()
    for k in range(20):
        leader.propose(b"%d" % k)
        c.deliver()
    with pytest.raises(ProposalDropped, match="not caught up"):
        leader.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))
    c.add_node(4)
    settle(c, 3)
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))
    c.deliver()
    assert leader.voters == {1, 2, 3, 4}
