"""Durable Raft state on disk: entries, term/vote/commit and snapshots.

Layout under the data directory::

    wal/0000000000000000.wal ...   segments of checksummed records (see `wal`)
    snap/<index>-<term>.snap       one snapshot per file, checksummed, written atomically

Each WAL record is a msgpack map with a ``kind``:

``entries``     a run of entries; it replaces any logged entries at the same or higher index
``hard_state``  the latest term, vote and commit
``snapshot``    a snapshot marker: the log up to ``meta.index`` now lives in a snap file
``segment``     first record of every segment: the hard state and snapshot marker current
                when the segment was started, so older segments can be deleted whole

Fields are encoded and checked with `codec`, never pickled. A record with a good checksum
but a body that does not decode is refused with an error naming the segment and record.

Group commit: `save` only writes, `sync` makes everything written since the last sync
durable with a single fsync. The node shell writes a whole `Ready` and then syncs once, so
all the proposals batched into one Ready share a single fsync.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from . import codec, wal
from .messages import Entry, HardState, PersistedState, Ready, Snapshot, SnapshotMeta

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
#: Snapshot files kept besides the newest one, as a fallback for an operator.
SNAPSHOTS_RETAINED = 1
_SNAP_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class StorageCorruptError(Exception):
    """The on-disk state cannot be trusted; the message names the file and position."""


def _pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack_any(payload: bytes, where: str) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise StorageCorruptError(f"{where}: not valid msgpack ({exc})") from None


def _unpack(payload: bytes, where: str) -> dict[str, Any]:
    obj = _unpack_any(payload, where)
    if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
        raise StorageCorruptError(f"{where}.kind: missing or not a string")
    return obj


def _encode_meta(meta: SnapshotMeta) -> dict[str, Any]:
    return codec.encode_snapshot(Snapshot(meta=meta))["meta"]


def _decode_meta(obj: Any, where: str) -> SnapshotMeta:
    return codec.decode_snapshot({"meta": obj, "data": b""}, where).meta


def _expect_fields(obj: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        if name not in obj:
            raise ValueError(f"{where}.{name}: missing")
    for key in obj:
        if key not in names:
            raise ValueError(f"{where}.{key}: unknown field")


def snapshot_file_name(meta: SnapshotMeta) -> str:
    return f"{meta.index:016x}-{meta.term:016x}.snap"


@dataclass(slots=True)
class _Replay:
    """State rebuilt while reading the records in order."""

    hard_state: HardState
    meta: SnapshotMeta
    entries: list[Entry]

    def append(self, new: Sequence[Entry]) -> None:
        if not new:
            return
        start = new[0].index
        ents = self.entries
        if not ents or start > ents[-1].index + 1 or start <= ents[0].index:
            # A gap is checked once replay is over: a later snapshot marker may cover it.
            ents.clear()
        else:
            del ents[start - ents[0].index :]
        ents.extend(new)

    def mark_snapshot(self, meta: SnapshotMeta) -> None:
        if meta.index < self.meta.index:
            return
        self.meta = meta
        ents = self.entries
        if not ents or meta.index < ents[0].index:
            return
        if meta.index > ents[-1].index or ents[meta.index - ents[0].index].term != meta.term:
            ents.clear()  # the snapshot replaces a log that disagrees with it
        else:
            del ents[: meta.index - ents[0].index + 1]


class DiskStorage:
    """The durable half of a Raft member. Not thread-safe: one owner at a time."""

    def __init__(
        self,
        data_dir: Path,
        log_: wal.SegmentedLog,
        persisted: PersistedState,
        segment_max_index: dict[int, int],
        *,
        segment_bytes: int,
        fsync: bool,
    ) -> None:
        self.data_dir = data_dir
        self.snap_dir = data_dir / "snap"
        self._wal = log_
        self.persisted = persisted  # what was on disk at open time
        self.hard_state = persisted.hard_state
        self.snapshot_meta = persisted.snapshot.meta
        self._segment_max_index = segment_max_index
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self.fsyncs = 0  # counted for benchmarks and tests of group commit

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
    ) -> DiskStorage:
        """Open or create the state under ``data_dir`` and replay it.

        Raises `wal.WalCorruptError` or `StorageCorruptError` if the state is damaged
        anywhere but at the tail of the newest segment.
        """
        data_dir = Path(data_dir)
        wal_dir = data_dir / "wal"
        snap_dir = data_dir / "snap"
        created = not data_dir.exists()
        data_dir.mkdir(parents=True, exist_ok=True)
        if created:
            wal.fsync_dir(data_dir.parent)  # the new directory's own name must survive too
        snap_dir.mkdir(exist_ok=True)
        first = _segment_header(HardState(), SnapshotMeta())
        seg_log, per_segment = wal.SegmentedLog.open(wal_dir, first)
        wal.fsync_dir(data_dir)

        state = _Replay(HardState(), SnapshotMeta(), [])
        segment_max_index: dict[int, int] = {}
        for seq, payloads in zip(seg_log.segments, per_segment, strict=True):
            top = 0
            for number, payload in enumerate(payloads):
                where = f"{wal_dir / wal.segment_name(seq)} record {number}"
                try:
                    top = max(top, _replay_record(state, payload, number, where))
                except ValueError as exc:
                    raise StorageCorruptError(f"{where}: {exc}") from None
            segment_max_index[seq] = top

        meta = state.meta
        entries = state.entries
        if entries and entries[0].index != meta.index + 1:
            raise StorageCorruptError(
                f"{wal_dir}: log starts at index {entries[0].index} but the snapshot "
                f"ends at {meta.index}; entries in between are missing"
            )
        snapshot = Snapshot(meta=meta)
        if meta.index > 0:
            snapshot = _read_snapshot(snap_dir / snapshot_file_name(meta), meta)
        hs = state.hard_state
        last = entries[-1].index if entries else meta.index
        commit = min(max(hs.commit, meta.index), last)
        if commit != hs.commit:
            log.warning("stored commit %d adjusted to %d (log ends at %d)", hs.commit, commit, last)
            hs = HardState(term=hs.term, vote=hs.vote, commit=commit)
        persisted = PersistedState(hard_state=hs, entries=tuple(entries), snapshot=snapshot)
        return cls(
            data_dir,
            seg_log,
            persisted,
            segment_max_index,
            segment_bytes=segment_bytes,
            fsync=fsync,
        )

    # -- writing ---------------------------------------------------------------------

    def save(
        self,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
    ) -> bool:
        """Write (not sync) a snapshot, entries and hard state, in that order.

        Returns True if anything was written. A snapshot received from the leader is
        written to its own file (atomically and durably) before its marker is logged.
        """
        records: list[bytes] = []
        if snapshot is not None and not snapshot.is_empty:
            self._write_snapshot_file(snapshot)
            records.append(_pack({"kind": "snapshot", "meta": _encode_meta(snapshot.meta)}))
            self.snapshot_meta = snapshot.meta
        if entries:
            records.append(
                _pack({"kind": "entries", "entries": [codec.encode_entry(e) for e in entries]})
            )
            seq = self._wal.segments[-1]
            top = self._segment_max_index.get(seq, 0)
            self._segment_max_index[seq] = max(top, entries[-1].index)
        if hard_state is not None and hard_state != self.hard_state:
            records.append(
                _pack({"kind": "hard_state", "hard_state": codec.encode_hard_state(hard_state)})
            )
            self.hard_state = hard_state
        if not records:
            return False
        self._wal.append(records)
        if self._wal.size >= self._segment_bytes:
            self._rotate()
        return True

    def sync(self) -> None:
        """One fsync for everything written since the last one."""
        if not self._wal.dirty:
            return
        if self._fsync:
            self._wal.sync()
            self.fsyncs += 1
        else:
            self._wal.forget_unsynced()

    def save_ready(self, ready: Ready) -> None:
        """Persist what a Ready asks for, with at most one fsync."""
        wrote = self.save(ready.entries, ready.hard_state, ready.snapshot)
        if wrote and (ready.must_sync or ready.snapshot is not None or ready.entries):
            self.sync()

    def save_local_snapshot(self, snapshot: Snapshot) -> None:
        """Record a snapshot the application took, then release what it makes redundant.

        Order matters for crash safety: the snapshot file is durable before the marker
        that points at it, and the marker is durable before any segment is deleted.
        """
        if snapshot.meta.index <= self.snapshot_meta.index:
            return
        self.save(snapshot=snapshot)
        self.sync()
        self._release_segments()
        self._prune_snapshot_files()

    def read_snapshot(self, meta: SnapshotMeta) -> Snapshot:
        """The snapshot saved for ``meta``, read back from its file (checked)."""
        return _read_snapshot(self.snap_dir / snapshot_file_name(meta), meta)

    def close(self) -> None:
        self._wal.close()

    # -- internals -------------------------------------------------------------------

    def _rotate(self) -> None:
        self._wal.rotate(_segment_header(self.hard_state, self.snapshot_meta))
        self.fsyncs += 1

    def _release_segments(self) -> None:
        """Delete the oldest segments whose entries all lie inside the snapshot."""
        doomed: list[int] = []
        for seq in self._wal.segments[:-1]:
            if self._segment_max_index.get(seq, 0) > self.snapshot_meta.index:
                break
            doomed.append(seq)
        if doomed:
            self._wal.release(doomed)
            for seq in doomed:
                self._segment_max_index.pop(seq, None)

    def _write_snapshot_file(self, snapshot: Snapshot) -> None:
        final = self.snap_dir / snapshot_file_name(snapshot.meta)
        temp = final.with_name(final.name + ".tmp")
        body = wal.frame(_pack(codec.encode_snapshot(snapshot)))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final)
        if self._fsync:
            wal.fsync_dir(self.snap_dir)

    def _prune_snapshot_files(self) -> None:
        found: list[tuple[int, str]] = []
        for name in os.listdir(self.snap_dir):
            m = _SNAP_NAME.match(name)
            if m:
                found.append((int(m.group(1), 16), name))
            elif name.endswith(".tmp"):
                (self.snap_dir / name).unlink(missing_ok=True)
        found.sort()
        keep = SNAPSHOTS_RETAINED + 1
        for index, name in found[:-keep]:
            if index < self.snapshot_meta.index:
                (self.snap_dir / name).unlink(missing_ok=True)


def _segment_header(hs: HardState, meta: SnapshotMeta) -> bytes:
    return _pack(
        {"kind": "segment", "hard_state": codec.encode_hard_state(hs), "meta": _encode_meta(meta)}
    )


def _replay_record(state: _Replay, payload: bytes, number: int, where: str) -> int:
    """Apply one record to the replay state; return the highest entry index it holds."""
    obj = _unpack(payload, where)
    kind = obj["kind"]
    if kind == "entries":
        _expect_fields(obj, ("kind", "entries"), "record")
        entries = codec.decode_entries(obj["entries"], "record.entries")
        state.append(entries)
        return entries[-1].index if entries else 0
    if kind == "hard_state":
        _expect_fields(obj, ("kind", "hard_state"), "record")
        state.hard_state = codec.decode_hard_state(obj["hard_state"], "record.hard_state")
        return 0
    if kind == "snapshot":
        _expect_fields(obj, ("kind", "meta"), "record")
        state.mark_snapshot(_decode_meta(obj["meta"], "record.meta"))
        return 0
    if kind == "segment":
        if number != 0:
            raise ValueError("record.kind: segment header in the middle of a segment")
        _expect_fields(obj, ("kind", "hard_state", "meta"), "record")
        state.hard_state = codec.decode_hard_state(obj["hard_state"], "record.hard_state")
        state.mark_snapshot(_decode_meta(obj["meta"], "record.meta"))
        return 0
    raise ValueError(f"record.kind: unknown record kind {kind!r}")


def _read_snapshot(path: Path, meta: SnapshotMeta) -> Snapshot:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StorageCorruptError(
            f"{path}: missing, but the write-ahead log says the log up to index "
            f"{meta.index} lives in it"
        ) from None
    result = wal.scan(data)
    if result.problem is not None or len(result.payloads) != 1:
        raise StorageCorruptError(
            f"{path}: corrupt snapshot file at byte offset {result.valid_bytes} "
            f"({result.problem or 'expected exactly one record'})"
        )
    try:
        snapshot = codec.decode_snapshot(_unpack_any(result.payloads[0], str(path)), "snapshot")
    except ValueError as exc:
        raise StorageCorruptError(f"{path}: {exc}") from None
    if snapshot.meta != meta:
        raise StorageCorruptError(f"{path}: holds {snapshot.meta}, the log expects {meta}")
    return snapshot
