"""Getting commands applied: the seam between the HTTP API and replication.

The HTTP layer never touches the store's mutating methods directly; it hands a command to
a :class:`Proposer` and waits for the outcome. kvd always runs the Raft-backed proposer
(:mod:`flotilla.daemons.kv.replicated`), a lone member being a one-voter cluster.

:class:`LocalProposer` is the earlier single-node format: each command made durable in an
append-only log (group commit: one fsync covers every command that arrived while the
previous fsync ran) before it is applied. It stays because data directories written in
that format are read back with :func:`load_durable_store` and converted to Raft's
(:mod:`flotilla.daemons.kv.migrate`), and it remains a small, tested reference for the
durability contract: an answered write survives SIGKILL and no reader ever sees a write
that a crash could still undo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Protocol

import msgpack
from flotilla.daemons.durable import write_atomic
from flotilla.daemons.kv.errors import EtcdError
from flotilla.daemons.kv.store import DEFAULT_HISTORY_BYTES, Event, Store

_HEADER = struct.Struct(">II")  # payload length, CRC32 of payload
DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024
SNAPSHOT_NAME = "snapshot.msgpack"
LOG_NAME = "commands.log"


class Proposer(Protocol):
    """What the API needs from replication."""

    store: Store

    async def propose(self, command: dict[str, Any]) -> Event | EtcdError | None:
        """Apply ``command`` everywhere it must be applied; return this node's outcome."""

    async def read_barrier(self) -> None:
        """Return once this node's store reflects every write acknowledged before the call."""

    @property
    def applied_index(self) -> int:
        """The replication log position applied so far (X-Raft-Index)."""

    @property
    def term(self) -> int:
        """The current leadership term (X-Raft-Term)."""

    def is_leader(self) -> bool:
        """Only the leader proposes ``expire`` commands."""


def encode_record(seq: int, command: dict[str, Any]) -> bytes:
    payload = msgpack.packb({"seq": seq, "cmd": command}, use_bin_type=True)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(data: bytes) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Decode a command log; returns the records and the length of the valid prefix.

    A torn or corrupt tail (a crash mid-append) ends the log: everything before it was
    fsynced and acknowledged, the tail was never acknowledged.
    """
    records: list[tuple[int, dict[str, Any]]] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start:start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            record = msgpack.unpackb(payload, raw=False)
            seq, command = int(record["seq"]), record["cmd"]
            if not isinstance(command, dict):
                raise ValueError("command is not a map")
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            break
        records.append((seq, command))
        offset = start + length
    return records, offset


def load_durable_store(data_dir: Path, history_bytes: int = DEFAULT_HISTORY_BYTES
                       ) -> tuple[Store, int]:
    """Rebuild the store from the snapshot plus the command log; compact both.

    Returns the store and the last applied sequence number. Compaction writes a fresh
    snapshot first and only then empties the log; a crash in between is harmless because
    replay skips records the snapshot already covers (by sequence number).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    snap_path = data_dir / SNAPSHOT_NAME
    log_path = data_dir / LOG_NAME
    seq = 0
    store = Store(history_bytes)
    if snap_path.exists():
        snap = msgpack.unpackb(snap_path.read_bytes(), raw=False)
        if not isinstance(snap, dict) or "store" not in snap:
            raise ValueError(f"{snap_path}: not a kvd snapshot (missing 'store')")
        store = Store.restore(snap["store"], history_bytes)
        seq = int(snap.get("seq", 0))
    replayed = 0
    if log_path.exists():
        records, _ = read_records(log_path.read_bytes())
        for record_seq, command in records:
            if record_seq <= seq:
                continue
            store.apply(command)
            seq = record_seq
            replayed += 1
    if replayed or not snap_path.exists():
        write_atomic(snap_path, msgpack.packb({"seq": seq, "store": store.snapshot()},
                                              use_bin_type=True))
    write_atomic(log_path, b"")
    return store, seq


class LocalProposer:
    """Single-node proposer: durable command log with group commit, then apply."""

    def __init__(self, data_dir: Path, history_bytes: int = DEFAULT_HISTORY_BYTES,
                 fsync: bool = True, compact_bytes: int = DEFAULT_COMPACT_BYTES) -> None:
        self.data_dir = data_dir
        self.store, self._seq = load_durable_store(data_dir, history_bytes)
        self._fsync = fsync
        self._compact_bytes = compact_bytes
        self._log_bytes = 0
        self.compactions = 0
        self._log = open(data_dir / LOG_NAME, "ab", buffering=0)  # noqa: SIM115
        self._pending: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0

    @property
    def applied_index(self) -> int:
        return self._seq

    @property
    def term(self) -> int:
        return 1

    def is_leader(self) -> bool:
        return True

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._log.close()

    async def propose(self, command: dict[str, Any]) -> Event | EtcdError | None:
        if self._closed:
            raise RuntimeError("proposer is closed")
        command.setdefault("now", time.time_ns())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        self._wakeup.set()
        # A cancelled caller (client gone) cancels only its wait: the command is queued
        # and will still be logged and applied, and the write loop skips done futures.
        return await future

    async def read_barrier(self) -> None:
        """Single node: every acknowledged write is already applied."""

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                if self._closed:
                    return
                continue
            batch, self._pending = self._pending, []
            chunks = []
            for command, _ in batch:
                self._seq += 1
                chunks.append(encode_record(self._seq, command))
            blob = b"".join(chunks)
            try:
                await loop.run_in_executor(None, self._append, blob)
            except OSError as err:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.commits += 1
            self._log_bytes += len(blob)
            for command, future in batch:
                outcome = self.store.apply(command)
                if not future.done():
                    future.set_result(outcome)
            if self._log_bytes >= self._compact_bytes:
                await self._compact()
            if self._pending:
                self._wakeup.set()

    async def _compact(self) -> None:
        """Fold the log into a fresh snapshot so restarts stay fast and the disk bounded.

        Runs inside the write loop, so nothing is appended meanwhile. The snapshot is
        renamed into place before the log is emptied; a crash between the two replays
        nothing twice because records carry sequence numbers.
        """
        blob = msgpack.packb({"seq": self._seq, "store": self.store.snapshot()},
                             use_bin_type=True)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, write_atomic, self.data_dir / SNAPSHOT_NAME, blob)
            await loop.run_in_executor(None, self._truncate_log)
        except OSError:
            return  # keep appending to the long log; the next batch tries again
        self._log_bytes = 0
        self.compactions += 1

    def _truncate_log(self) -> None:
        os.ftruncate(self._log.fileno(), 0)
        os.fsync(self._log.fileno())

    def _append(self, blob: bytes) -> None:
        self._log.write(blob)
        if self._fsync:
            os.fdatasync(self._log.fileno())
