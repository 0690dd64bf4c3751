"""Storage against a model: any sequence of appends, overwrites, hard states, snapshots and
reopenings reads back exactly what the model holds (small segments force rotation)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flotilla.daemons.raft.messages import Entry, HardState, Snapshot, SnapshotMeta
from flotilla.daemons.raft.node import _parse_peers
from flotilla.daemons.raft.storage import DiskStorage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.integers(1, 8)),
        st.tuples(st.just("hs"), st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.just("snap"), st.integers(0, 10), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=40,
)


class Model:
    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.snap = SnapshotMeta()
        self.hs = HardState()
        self.term = 1

    @property
    def last(self) -> int:
        return max(self.entries, default=self.snap.index)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_storage_matches_model(sequence) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        st_ = DiskStorage.open(path, segment_bytes=512, fsync=False)
        m = Model()
        for op, a, b in sequence:
            if op == "append":
                # Overwrite from somewhere in the live log (or append at the end).
                start = max(m.snap.index + 1, m.last + 1 - a)
                m.term += 1 if a else 0
                new = [
                    Entry(m.term, i, data=f"{i}/{m.term}".encode())
                    for i in range(start, start + b)
                ]
                for i in [i for i in m.entries if i >= start]:
                    del m.entries[i]
                m.entries.update({e.index: e for e in new})
                st_.save(new)
            elif op == "hs":
                m.hs = HardState(term=m.term, vote=a, commit=min(m.last, m.hs.commit + b))
                st_.save(hard_state=m.hs)
            elif op == "snap":
                idx = m.snap.index + a
                if not m.snap.index < idx <= m.last:
                    continue
                meta = SnapshotMeta(index=idx, term=m.entries[idx].term, voters=(1,))
                st_.save_local_snapshot(Snapshot(meta, data=f"s{idx}".encode()))
                m.snap = meta
                m.entries = {i: e for i, e in m.entries.items() if i > idx}
            else:
                st_.sync()
                st_.close()
                st_ = DiskStorage.open(path, segment_bytes=512, fsync=False)
            st_.sync()
        st_.close()
        p = DiskStorage.open(path, segment_bytes=512, fsync=False).persisted
        assert p.entries == tuple(m.entries[i] for i in sorted(m.entries))
        assert p.snapshot.meta == m.snap
        if m.snap.index:
            assert p.snapshot.data == f"s{m.snap.index}".encode()
        commit = min(max(m.hs.commit, m.snap.index), m.last)
        assert p.hard_state == HardState(m.hs.term, m.hs.vote, commit)


def test_peer_list_errors_name_the_item() -> None:
    import argparse

    import pytest

    assert _parse_peers("1=127.0.0.1:7001,2=127.0.0.2:7002") == {
        1: ("127.0.0.1", 7001),
        2: ("127.0.0.2", 7002),
    }
    with pytest.raises(argparse.ArgumentTypeError, match=r"'x=127\.0\.0\.1:1'"):
        _parse_peers("x=127.0.0.1:1")
    with pytest.raises(argparse.ArgumentTypeError, match="host:port"):
        _parse_peers("1=127.0.0.1")
