"""Durable Raft storage: framing, group commit, replay, rotation, snapshots, corruption."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgpack
import pytest
from flotilla.daemons.raft import wal
from flotilla.daemons.raft.messages import Entry, HardState, Ready, Snapshot, SnapshotMeta
from flotilla.daemons.raft.storage import DiskStorage, StorageCorruptError


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=f"e{i}t{term}".encode()) for i in range(first, last + 1)]


def segment_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "wal").glob("*.wal"))


def test_round_trip_entries_and_hard_state(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(ents(1, 5), HardState(term=1, vote=2, commit=3))
    st.sync()
    st.close()
    p = DiskStorage.open(tmp_path).persisted
    assert p.entries == tuple(ents(1, 5))
    assert p.hard_state == HardState(term=1, vote=2, commit=3)
    assert p.snapshot.is_empty


def test_fresh_directory_is_an_empty_node(tmp_path: Path) -> None:
    p = DiskStorage.open(tmp_path / "new").persisted
    assert p.entries == () and p.hard_state == HardState() and p.snapshot.is_empty


def test_many_readys_share_one_fsync(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    for i in range(1, 51):
        st.save([Entry(term=1, index=i, data=b"x")], HardState(term=1, vote=1, commit=i - 1))
    st.sync()
    st.sync()  # nothing new: no second fsync
    assert st.fsyncs == 1
    st.close()
    assert len(DiskStorage.open(tmp_path).persisted.entries) == 50


def test_save_ready_syncs_once_per_ready(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save_ready(Ready(entries=tuple(ents(1, 3)), hard_state=HardState(1, 1, 0), must_sync=True))
    assert st.fsyncs == 1
    # A commit-only change need not be synced (losing it only delays re-application).
    st.save_ready(Ready(hard_state=HardState(1, 1, 2), must_sync=False))
    assert st.fsyncs == 1


def test_conflicting_entries_are_replaced_on_replay(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(ents(1, 6, term=1))
    st.save(ents(4, 5, term=2))  # a new leader overwrote 4.. (6 is gone)
    st.save(ents(6, 7, term=2))
    st.sync()
    st.close()
    got = DiskStorage.open(tmp_path).persisted.entries
    assert [(e.index, e.term) for e in got] == [(1, 1), (2, 1), (3, 1)] + [
        (i, 2) for i in range(4, 8)
    ]
    assert got[5].data == b"e6t2"


def test_rotation_and_release_after_local_snapshot(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path, segment_bytes=600)
    for i in range(1, 101):
        st.save([Entry(term=1, index=i, data=b"p" * 20)], HardState(1, 1, i))
        st.sync()
    assert len(segment_files(tmp_path)) > 3
    before = len(segment_files(tmp_path))
    snap = Snapshot(SnapshotMeta(index=80, term=1, voters=(1, 2, 3)), data=b"state@80")
    st.save_local_snapshot(snap)
    after = len(segment_files(tmp_path))
    assert after < before
    st.close()
    p = DiskStorage.open(tmp_path, segment_bytes=600).persisted
    assert p.snapshot == snap
    assert p.entries[0].index == 81 and p.entries[-1].index == 100
    assert p.hard_state == HardState(1, 1, 100)


def test_only_newest_snapshots_are_kept(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(ents(1, 30))
    for idx in (10, 20, 30):
        st.save_local_snapshot(Snapshot(SnapshotMeta(index=idx, term=1, voters=(1,)), b"s"))
    names = sorted(os.listdir(tmp_path / "snap"))
    assert len(names) == 2 and names[-1].startswith(f"{30:016x}")


def test_snapshot_from_leader_replaces_a_disagreeing_log(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(ents(1, 10, term=1))
    snap = Snapshot(SnapshotMeta(index=7, term=3, voters=(1, 2, 3)), b"leader-state")
    st.save_ready(Ready(snapshot=snap, hard_state=HardState(3, 0, 7), must_sync=True))
    st.save(ents(8, 9, term=3))
    st.sync()
    st.close()
    p = DiskStorage.open(tmp_path).persisted
    assert p.snapshot == snap
    assert [(e.index, e.term) for e in p.entries] == [(8, 3), (9, 3)]


def test_snapshot_matching_the_log_keeps_the_suffix(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(ents(1, 10, term=1))
    st.save_local_snapshot(Snapshot(SnapshotMeta(index=4, term=1, voters=(1,)), b"s4"))
    st.close()
    p = DiskStorage.open(tmp_path).persisted
    assert [e.index for e in p.entries] == list(range(5, 11))


def test_commit_is_clamped_to_the_logged_entries(tmp_path: Path, caplog) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(ents(1, 3), HardState(1, 1, 9))
    st.sync()
    st.close()
    with caplog.at_level(logging.WARNING):
        assert DiskStorage.open(tmp_path).persisted.hard_state.commit == 3
    assert "adjusted" in caplog.text


def _small_wal(tmp_path: Path) -> tuple[Path, list[int]]:
    """A one-segment WAL with a header and 4 more records; returns file and frame starts."""
    st = DiskStorage.open(tmp_path)
    st.save(ents(1, 2), HardState(1, 1, 0))
    st.save(ents(3, 3), HardState(1, 1, 2))
    st.sync()
    st.close()
    (seg,) = segment_files(tmp_path)
    data = seg.read_bytes()
    starts, off = [], 0
    while off < len(data):
        starts.append(off)
        off += wal.HEADER.size + int.from_bytes(data[off : off + 4], "big")
    assert len(starts) == 5
    return seg, starts


def test_torn_tail_at_every_length_is_truncated_with_a_warning(tmp_path: Path, caplog) -> None:
    seg, starts = _small_wal(tmp_path)
    pristine = seg.read_bytes()
    last = starts[-1]
    for cut in range(last + 1, len(pristine)):
        seg.write_bytes(pristine[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            st = DiskStorage.open(tmp_path)
        # The last record was the hard state (1,1,2): we are back to commit 0.
        assert st.persisted.hard_state == HardState(1, 1, 0), cut
        assert [e.index for e in st.persisted.entries] == [1, 2, 3]
        assert "torn tail" in caplog.text
        st.close()
        assert seg.stat().st_size == last
        # Once truncated, the log is clean and appendable again.
        st = DiskStorage.open(tmp_path)
        st.save(ents(4, 4))
        st.sync()
        st.close()
        assert DiskStorage.open(tmp_path).persisted.entries[-1].index == 4


def test_corruption_at_every_byte(tmp_path: Path, caplog) -> None:
    """A flipped byte in the last record is a torn tail; anywhere earlier refuses to start."""
    seg, starts = _small_wal(tmp_path)
    pristine = seg.read_bytes()
    for pos in range(len(pristine)):
        damaged = bytearray(pristine)
        damaged[pos] ^= 0x5A
        seg.write_bytes(bytes(damaged))
        record = max(i for i, s in enumerate(starts) if s <= pos)
        if record == len(starts) - 1:
            st = DiskStorage.open(tmp_path)
            assert st.persisted.hard_state == HardState(1, 1, 0), pos
            st.close()
            assert seg.read_bytes() == pristine[: starts[-1]]
        else:
            with pytest.raises(wal.WalCorruptError) as info:
                DiskStorage.open(tmp_path)
            assert info.value.offset == starts[record], pos
            assert str(seg) in str(info.value)
            assert f"offset {starts[record]}" in str(info.value)
            assert seg.read_bytes() == bytes(damaged)  # nothing was changed


def test_corrupt_older_segment_refuses_to_start(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path, segment_bytes=300)
    for i in range(1, 30):
        st.save([Entry(term=1, index=i, data=b"d" * 30)])
    st.sync()
    st.close()
    first = segment_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[-3] ^= 1  # the tail of an *older* segment is not a crash artefact
    first.write_bytes(bytes(data))
    with pytest.raises(wal.WalCorruptError, match=first.name):
        DiskStorage.open(tmp_path, segment_bytes=300)


def test_valid_checksum_with_bad_body_names_the_record(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.close()
    (seg,) = segment_files(tmp_path)
    bad = msgpack.packb({"kind": "entries", "entries": [{"term": 1, "index": 0}]})
    with open(seg, "ab") as f:
        f.write(wal.frame(bad))
    with pytest.raises(StorageCorruptError, match=r"record 1: .*entries\[0\]"):
        DiskStorage.open(tmp_path)


def test_missing_or_corrupt_snapshot_file_refuses_to_start(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(ents(1, 5))
    st.save_local_snapshot(Snapshot(SnapshotMeta(index=5, term=1, voters=(1,)), b"five"))
    st.close()
    (snap,) = (tmp_path / "snap").glob("*.snap")
    body = snap.read_bytes()
    snap.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(StorageCorruptError, match="corrupt snapshot file"):
        DiskStorage.open(tmp_path)
    snap.unlink()
    with pytest.raises(StorageCorruptError, match="missing"):
        DiskStorage.open(tmp_path)


def test_leftover_temp_files_are_ignored_and_removed(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(ents(1, 2))
    st.sync()
    st.close()
    (tmp_path / "wal" / (wal.segment_name(1) + ".tmp")).write_bytes(b"half-made")
    p = DiskStorage.open(tmp_path).persisted
    assert [e.index for e in p.entries] == [1, 2]
    assert not list((tmp_path / "wal").glob("*.tmp"))


def test_frame_refuses_empty_payload() -> None:
    with pytest.raises(ValueError, match="record payload"):
        wal.frame(b"")
    # Zeroed space is never a valid frame: the checksum covers the length bytes.
    assert wal.scan(bytes(64)).problem is not None
