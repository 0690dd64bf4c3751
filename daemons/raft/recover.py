"""Disaster recovery: make one surviving member the whole cluster (``--force-new-cluster``).

When a majority of members is gone for good, the cluster cannot commit anything again,
not even the membership change that would remove the dead members. etcd's answer, kept
here, is an offline rewrite of one survivor's log before it starts:

- every committed entry is kept (a committed entry may have been acknowledged);
- the uncommitted tail is dropped: no quorum stored it, so no client was told it
  succeeded, and this member alone can no longer find out whether it ever will;
- one committed ``REMOVE_NODE`` entry per other member is appended, so Raft's voter set
  and the application's member list shrink to this member at the same log position, as
  if the removals had been agreed, and every later snapshot records the new membership.

The member then starts as a one-voter cluster with all its data and can grow again
through ordinary membership changes. Nothing here runs while a Raft node is using the
directory: the caller rewrites the data first and then starts the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import codec
from .core import _change_membership
from .messages import ConfChange, ConfChangeType, Entry, EntryType, HardState
from .storage import DiskStorage


@dataclass(frozen=True, slots=True)
class Recovery:
    """What the rewrite did, for the daemon's log line."""

    commit: int  # last index kept from the old log
    dropped: int  # uncommitted entries discarded
    removed: tuple[int, ...]  # members removed, in log order


def membership_at_commit(storage: DiskStorage) -> tuple[set[int], set[int]]:
    """Voters and learners after every committed entry (the snapshot, then changes)."""
    persisted = storage.persisted
    voters = set(persisted.snapshot.meta.voters)
    learners = set(persisted.snapshot.meta.learners)
    for entry in persisted.entries:
        if entry.index > persisted.hard_state.commit:
            break
        if entry.type is EntryType.CONF_CHANGE:
            cc = codec.decode_conf_change(entry.data, f"entry[{entry.index}].data")
            _change_membership(voters, learners, cc)
    return voters, learners


def force_new_cluster(data_dir: str | Path, node_id: int, *, fsync: bool = True) -> Recovery:
    """Rewrite the Raft data in ``data_dir`` so that ``node_id`` is the only member.

    Raises ValueError if the directory holds no Raft state or this member is not a voter
    in the committed membership (a learner never had the whole log's agreement).
    """
    storage = DiskStorage.open(data_dir, fsync=fsync)
    try:
        persisted = storage.persisted
        hs = persisted.hard_state
        if hs == HardState() and not persisted.entries and persisted.snapshot.is_empty:
            raise ValueError(f"{data_dir}: no Raft data to recover")
        voters, learners = membership_at_commit(storage)
        if node_id not in voters:
            raise ValueError(f"{data_dir}: member {node_id:x} is not a voter in the "
                             f"committed membership (voters {sorted(voters)})")
        others = sorted((voters | learners) - {node_id})
        last = persisted.entries[-1].index if persisted.entries else hs.commit
        dropped = max(0, last - hs.commit)
        removals = [
            Entry(hs.term, hs.commit + 1 + k, EntryType.CONF_CHANGE,
                  codec.encode_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, member)))
            for k, member in enumerate(others)
        ]
        if removals:
            # Entries written at commit + 1 replace the uncommitted tail on replay.
            storage.save(removals, HardState(hs.term, hs.vote, hs.commit + len(removals)))
        elif dropped:
            # Nothing to remove, but the tail must still go: rewriting the entry at the
            # commit index truncates what follows it. (With the log compacted up to the
            # commit index there is no such entry; the tail is then kept, and being this
            # lone voter's own log it will be committed: a permitted outcome for entries
            # whose clients were never answered.)
            kept = [e for e in persisted.entries if e.index == hs.commit]
            storage.save(kept)
            dropped = dropped if kept else 0
        storage.sync()
        return Recovery(hs.commit, dropped, tuple(others))
    finally:
        storage.close()
