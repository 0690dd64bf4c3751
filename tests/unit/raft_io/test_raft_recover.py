"""``--force-new-cluster``'s rewrite of a member's Raft data, on real files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from flotilla.daemons.raft import codec
from flotilla.daemons.raft.core import RaftNode
from flotilla.daemons.raft.messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from flotilla.daemons.raft.recover import force_new_cluster, membership_at_commit
from flotilla.daemons.raft.storage import DiskStorage


def conf(kind: ConfChangeType, node: int, index: int, term: int = 2) -> Entry:
    return Entry(term, index, EntryType.CONF_CHANGE,
                 codec.encode_conf_change(ConfChange(kind, node)))


def normal(index: int, term: int = 2) -> Entry:
    return Entry(term, index, EntryType.NORMAL, f"value {index}".encode())


def write_state(data_dir: Path, entries: list[Entry], commit: int,
                voters: tuple[int, ...] = (1, 2, 3)) -> None:
    storage = DiskStorage.open(data_dir, fsync=False)
    storage.save(snapshot=Snapshot(SnapshotMeta(1, 1, voters, ()), b""))
    storage.save(entries, HardState(term=3, vote=2, commit=commit))
    storage.sync()
    storage.close()


def reopen(data_dir: Path) -> DiskStorage:
    return DiskStorage.open(data_dir, fsync=False)


def test_committed_entries_stay_the_tail_goes_and_the_others_are_removed(tmp_path: Path
                                                                         ) -> None:
    write_state(tmp_path, [normal(i) for i in range(2, 11)], commit=7)
    outcome = force_new_cluster(tmp_path, 1, fsync=False)
    assert (outcome.commit, outcome.dropped, outcome.removed) == (7, 3, (2, 3))
    storage = reopen(tmp_path)
    try:
        entries = storage.persisted.entries
        assert [e.index for e in entries] == list(range(2, 10))
        assert [e.data for e in entries[:6]] == [f"value {i}".encode() for i in range(2, 8)]
        removals = [codec.decode_conf_change(e.data) for e in entries[6:]]
        assert [(c.type, c.node_id) for c in removals] == [
            (ConfChangeType.REMOVE_NODE, 2), (ConfChangeType.REMOVE_NODE, 3)]
        assert all(e.term == 3 for e in entries[6:])
        assert storage.persisted.hard_state.commit == 9
        assert membership_at_commit(storage) == ({1}, set())
    finally:
        storage.close()


def test_committed_membership_changes_count_and_uncommitted_ones_do_not(tmp_path: Path
                                                                         ) -> None:
    entries = [normal(2), conf(ConfChangeType.ADD_VOTER, 4, 3),
               conf(ConfChangeType.ADD_LEARNER, 5, 4), conf(ConfChangeType.REMOVE_NODE, 2, 5),
               conf(ConfChangeType.ADD_VOTER, 6, 6)]
    write_state(tmp_path, entries, commit=5)
    outcome = force_new_cluster(tmp_path, 3, fsync=False)
    assert outcome.removed == (1, 4, 5)  # 2 was already gone; 6 was never committed
    assert outcome.dropped == 1


def test_the_rewritten_member_elects_itself_with_its_data(tmp_path: Path) -> None:
    write_state(tmp_path, [normal(i) for i in range(2, 6)], commit=5)
    force_new_cluster(tmp_path, 2, fsync=False)
    storage = reopen(tmp_path)
    node = RaftNode(2, persisted=storage.persisted, rng=random.Random(1))
    storage.close()
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == list(range(2, 8))
    node.advance(rd)
    assert node.voters == {2}
    for _ in range(100):
        node.tick()
        if node.role is Role.LEADER:
            break
        while node.has_ready():
            node.advance(node.ready())
    assert node.role is Role.LEADER
    assert node.propose(b"after recovery") == 9  # after the new leader's empty entry


def test_running_it_again_changes_nothing(tmp_path: Path) -> None:
    write_state(tmp_path, [normal(i) for i in range(2, 6)], commit=5)
    force_new_cluster(tmp_path, 1, fsync=False)
    again = force_new_cluster(tmp_path, 1, fsync=False)
    assert (again.removed, again.dropped) == ((), 0)
    storage = reopen(tmp_path)
    try:
        assert storage.persisted.entries[-1].index == 7
    finally:
        storage.close()


def test_empty_data_and_non_voters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Raft data to recover"):
        force_new_cluster(tmp_path / "empty", 1, fsync=False)
    write_state(tmp_path / "d", [conf(ConfChangeType.ADD_LEARNER, 4, 2)], commit=2)
    with pytest.raises(ValueError, match="member 4 is not a voter"):
        force_new_cluster(tmp_path / "d", 4, fsync=False)
