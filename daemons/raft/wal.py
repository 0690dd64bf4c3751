"""Append-only, checksummed record files (the write-ahead log's framing and segments).

This module knows nothing about Raft: it stores opaque byte payloads in numbered segment
files and hands them back in order on open. `storage` gives the payloads their meaning.

Frame layout, all integers big-endian::

    length  u32   payload length, 1 .. MAX_RECORD_BYTES
    crc     u32   CRC-32 (zlib) over the 4 length bytes followed by the payload
    payload bytes

The checksum covers the length too, so a corrupted length cannot send the reader off
into the middle of another record unnoticed, and a run of zero bytes (a file extended but
never written) is never a valid frame: the CRC of four zero length bytes is not zero.

Recovery rule. A crash (even SIGKILL, or power loss on a file system that orders data
writes) can only damage the *end* of the newest segment: a frame cut short, or one whose
checksum fails. Such a tail is cut off with a warning. Damage anywhere else means the disk
lost data that had been acknowledged, and guessing would risk serving a wrong log, so
opening fails with `WalCorruptError` naming the file and byte offset. "Anywhere else" is
a bad frame in an older segment, or a bad frame in the newest segment after which a valid
frame can still be found.

Segments are created complete (first record written to a temp file, fsynced, renamed,
directory fsynced), so a segment file on disk always starts with a valid frame.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = struct.Struct(">II")
#: A single record larger than this is treated as corruption (and refused on write).
MAX_RECORD_BYTES = 256 * 1024 * 1024
SEGMENT_SUFFIX = ".wal"
_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})\.wal$")


class WalCorruptError(Exception):
    """The log is damaged somewhere other than its tail; refusing to guess."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(
            f"write-ahead log {path} is corrupt at byte offset {offset}: {reason}; "
            "valid records follow, so this is not a torn tail from a crash. "
            "Restore this member from a peer (remove and re-add it) instead of editing files."
        )
        self.path = path
        self.offset = offset
        self.reason = reason


def frame(payload: bytes) -> bytes:
    """Wrap one payload in a length + CRC frame."""
    n = len(payload)
    if not 0 < n <= MAX_RECORD_BYTES:
        raise ValueError(f"record payload: {n} bytes outside 1..{MAX_RECORD_BYTES}")
    length = n.to_bytes(4, "big")
    return length + zlib.crc32(payload, zlib.crc32(length)).to_bytes(4, "big") + payload


def _frame_at(data: bytes | memoryview, offset: int) -> tuple[int, str | None]:
    """Check the frame starting at ``offset``: (end offset, None) or (offset, problem)."""
    if len(data) - offset < HEADER.size:
        return offset, "incomplete record header"
    length, crc = HEADER.unpack_from(data, offset)
    if not 0 < length <= MAX_RECORD_BYTES:
        return offset, f"record length {length} out of range"
    end = offset + HEADER.size + length
    if end > len(data):
        return offset, "record extends past the end of the file"
    start = offset + HEADER.size
    expected = zlib.crc32(data[start:end], zlib.crc32(data[offset : offset + 4]))
    if expected != crc:
        return offset, "checksum mismatch"
    return end, None


def _valid_frame_after(data: bytes, offset: int) -> int | None:
    """First offset > ``offset`` where a complete frame with a good checksum starts."""
    for candidate in range(offset + 1, len(data) - HEADER.size + 1):
        _, problem = _frame_at(data, candidate)
        if problem is None:
            return candidate
    return None


@dataclass(slots=True)
class ScanResult:
    payloads: list[bytes]
    valid_bytes: int  # offset just past the last good frame
    problem: str | None  # why scanning stopped early, None if the file is clean


def scan(data: bytes) -> ScanResult:
    """Split a segment's bytes into payloads, stopping at the first bad frame."""
    payloads: list[bytes] = []
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        end, problem = _frame_at(data, offset)
        if problem is not None:
            return ScanResult(payloads, offset, problem)
        payloads.append(bytes(view[offset + HEADER.size : end]))
        offset = end
    return ScanResult(payloads, offset, None)


def fsync_dir(path: Path) -> None:
    """Make a create, rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def segment_name(seq: int) -> str:
    return f"{seq:016x}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """Sequence numbers of the segment files in ``directory``, oldest first."""
    seqs = []
    for name in os.listdir(directory):
        m = _SEGMENT_NAME.match(name)
        if m:
            seqs.append(int(m.group(1), 16))
    return sorted(seqs)


class SegmentedLog:
    """Numbered segment files; appends go to the newest one.

    ``append`` only writes (into the page cache); ``sync`` makes everything written so far
    durable with one ``fdatasync``. Callers batch many records per sync (group commit).
    """

    def __init__(self, directory: Path, segments: list[int], fd: int, size: int) -> None:
        self.directory = directory
        self.segments = segments
        self._fd = fd
        self.size = size  # bytes in the newest segment
        self._dirty = False

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, first_payload: bytes) -> tuple[SegmentedLog, list[list[bytes]]]:
        """Open (or create) the log; return it and each segment's payloads, oldest first.

        ``first_payload`` becomes the first record of a brand-new log's first segment.
        """
        directory.mkdir(parents=True, exist_ok=True)
        _remove_temp_files(directory)
        seqs = list_segments(directory)
        if not seqs:
            _create_segment(directory, 0, first_payload)
            seqs = [0]
        per_segment: list[list[bytes]] = []
        size = 0
        for position, seq in enumerate(seqs):
            path = directory / segment_name(seq)
            data = path.read_bytes()
            result = scan(data)
            newest = position == len(seqs) - 1
            if result.problem is not None:
                if not newest:
                    raise WalCorruptError(path, result.valid_bytes, result.problem)
                later = _valid_frame_after(data, result.valid_bytes)
                if later is not None:
                    raise WalCorruptError(
                        path,
                        result.valid_bytes,
                        f"{result.problem} (a valid record starts at offset {later})",
                    )
                log.warning(
                    "write-ahead log %s: torn tail at offset %d (%s); truncating %d bytes",
                    path,
                    result.valid_bytes,
                    result.problem,
                    len(data) - result.valid_bytes,
                )
                _truncate(path, result.valid_bytes)
            if not result.payloads:
                # Segments are created with their first record in place; an empty one
                # can only be a hand-made file, which is not a log we wrote.
                raise WalCorruptError(path, 0, "segment holds no valid record")
            per_segment.append(result.payloads)
            if newest:
                size = result.valid_bytes
        fd = os.open(directory / segment_name(seqs[-1]), os.O_WRONLY | os.O_APPEND)
        return cls(directory, seqs, fd, size), per_segment

    # -- writing ---------------------------------------------------------------------

    def append(self, payloads: Iterable[bytes]) -> None:
        """Write records to the newest segment (not yet durable: call ``sync``)."""
        buf = b"".join(frame(p) for p in payloads)
        if not buf:
            return
        view = memoryview(buf)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(buf)
        self._dirty = True

    @property
    def dirty(self) -> bool:
        """True if something was written since the last sync."""
        return self._dirty

    def forget_unsynced(self) -> None:
        """Treat written data as settled without an fsync (only for fsync-off benchmarks)."""
        self._dirty = False

    def sync(self) -> None:
        if self._dirty:
            os.fdatasync(self._fd)
            self._dirty = False

    def rotate(self, first_payload: bytes) -> int:
        """Sync the current segment and start a new one whose first record is given."""
        self.sync()
        seq = self.segments[-1] + 1
        _create_segment(self.directory, seq, first_payload)
        os.close(self._fd)
        self._fd = os.open(self.directory / segment_name(seq), os.O_WRONLY | os.O_APPEND)
        self.segments.append(seq)
        self.size = len(frame(first_payload))
        return seq

    def release(self, seqs: Iterable[int]) -> None:
        """Delete old segments (never the newest) once nothing in them is needed."""
        doomed = set(seqs) - {self.segments[-1]}
        if not doomed:
            return
        for seq in sorted(doomed):
            (self.directory / segment_name(seq)).unlink(missing_ok=True)
        self.segments = [s for s in self.segments if s not in doomed]
        fsync_dir(self.directory)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _create_segment(directory: Path, seq: int, first_payload: bytes) -> None:
    final = directory / segment_name(seq)
    temp = directory / (segment_name(seq) + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, frame(first_payload))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, final)
    fsync_dir(directory)


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_temp_files(directory: Path) -> None:
    """A ``.tmp`` file is a segment whose creation never finished: it was never used."""
    for name in os.listdir(directory):
        if name.endswith(".tmp"):
            (directory / name).unlink()
