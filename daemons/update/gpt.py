"""GUID partition tables as bytes: read the USR slots, write their attribute bits back.

The engine changes nothing in a partition table but the attribute words of the USR
entries, and must never leave a disk that no longer boots. So it reads both copies of the
table, checks every CRC, and writes a change as four blocks in a safe order — the backup
entries, the backup header, the primary entries, the primary header — each copy complete
and self-consistent on its own: a crash between the steps leaves one valid table (the old
one or the new one), never a half-written one. Pure: the shell reads and writes the byte
ranges this module names and fsyncs between the steps.
"""

from __future__ import annotations

import dataclasses
import struct
import uuid
import zlib
from collections.abc import Callable, Mapping

from .gptprio import Slot

SIGNATURE = b"EFI PART"
HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
ENTRY = struct.Struct("<16s16sQQQ72s")
MAX_ENTRIES_BYTES = 1 << 20


class GptError(ValueError):
    """The disk's table is missing, damaged or not what an A/B update needs."""


@dataclasses.dataclass(frozen=True)
class Header:
    revision: int
    header_size: int
    current_lba: int
    backup_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int

    @property
    def entries_bytes(self) -> int:
        return self.entry_count * self.entry_size

    def pack(self, sector: int) -> bytes:
        fields = [SIGNATURE, self.revision, self.header_size, 0, 0, self.current_lba,
                  self.backup_lba, self.first_usable, self.last_usable, self.disk_guid,
                  self.entries_lba, self.entry_count, self.entry_size, self.entries_crc]
        raw = bytearray(HEADER.pack(*fields))
        raw += b"\0" * (self.header_size - len(raw))
        struct.pack_into("<I", raw, 16, zlib.crc32(raw))
        return bytes(raw) + b"\0" * (sector - len(raw))


def parse_header(block: bytes) -> Header:
    """A GPT header from the sector that holds it, CRC checked."""
    if len(block) < HEADER.size or block[:8] != SIGNATURE:
        raise GptError("no GPT header (signature 'EFI PART' missing)")
    (_, revision, size, crc, _, current, backup, first, last, guid, entries_lba, count,
     entry_size, entries_crc) = HEADER.unpack_from(block)
    if not HEADER.size <= size <= len(block):
        raise GptError(f"GPT header size {size} is invalid")
    raw = bytearray(block[:size])
    struct.pack_into("<I", raw, 16, 0)
    if zlib.crc32(raw) != crc:
        raise GptError("GPT header CRC does not match")
    if entry_size < ENTRY.size or entry_size % 8 or count * entry_size > MAX_ENTRIES_BYTES:
        raise GptError(f"GPT entry array of {count} x {entry_size} bytes is invalid")
    return Header(revision, size, current, backup, first, last, guid, entries_lba, count,
                  entry_size, entries_crc)


def parse_entries(header: Header, raw: bytes) -> list[Slot]:
    """The used entries of the array, numbered from 1 as partitions are."""
    if len(raw) < header.entries_bytes or zlib.crc32(raw[: header.entries_bytes]) != \
            header.entries_crc:
        raise GptError("GPT entry array CRC does not match its header")
    slots = []
    for index in range(header.entry_count):
        offset = index * header.entry_size
        type_raw, unique_raw, _, _, attributes, name_raw = ENTRY.unpack_from(raw, offset)
        if type_raw == b"\0" * 16:
            continue
        label = name_raw.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        slots.append(Slot(number=index + 1, uuid=str(uuid.UUID(bytes_le=unique_raw)),
                          type_guid=str(uuid.UUID(bytes_le=type_raw)), attributes=attributes,
                          label=label))
    return slots


@dataclasses.dataclass(frozen=True)
class Write:
    """``data`` to put at byte ``offset`` of the disk; writes are applied in list order."""

    offset: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class Table:
    """Both copies of a disk's table, checked to agree."""

    sector: int
    primary: Header
    backup: Header
    entries: bytes
    slots: tuple[Slot, ...]

    def extent(self, number: int) -> tuple[int, int]:
        """Byte offset and size of partition ``number``, for writing a payload into it."""
        if number not in {s.number for s in self.slots}:
            raise GptError(f"partition {number} does not exist")
        offset = (number - 1) * self.primary.entry_size
        _, _, first, last, _, _ = ENTRY.unpack_from(self.entries, offset)
        if not self.primary.first_usable <= first <= last <= self.primary.last_usable:
            raise GptError(f"partition {number} spans LBA {first}-{last}, outside the "
                           "usable area")
        return first * self.sector, (last - first + 1) * self.sector

    def set_attributes(self, attributes: Mapping[int, int]) -> list[Write]:
        """The writes that give partitions ``number -> attribute word``, in the safe order."""
        entries = bytearray(self.entries)
        known = {s.number for s in self.slots}
        for number, value in attributes.items():
            if number not in known:
                raise GptError(f"partition {number} does not exist")
            struct.pack_into("<Q", entries, (number - 1) * self.primary.entry_size + 48, value)
        crc = zlib.crc32(entries[: self.primary.entries_bytes])
        primary = dataclasses.replace(self.primary, entries_crc=crc)
        backup = dataclasses.replace(self.backup, entries_crc=crc)
        s = self.sector
        return [
            Write(backup.entries_lba * s, bytes(entries)),
            Write(backup.current_lba * s, backup.pack(s)),
            Write(primary.entries_lba * s, bytes(entries)),
            Write(primary.current_lba * s, primary.pack(s)),
        ]


def read_table(read: Callable[[int, int], bytes], disk_size: int, sector: int = 512) -> Table:
    """Both copies through ``read(offset, length) -> bytes``; refuses a damaged or split table.

    The engine never writes over a table it cannot fully trust: if either copy is damaged
    or they disagree, ``cgpt repair`` (or the user) must fix the disk first.
    """
    primary = parse_header(read(sector, sector))
    if primary.current_lba != 1:
        raise GptError(f"primary GPT header says it sits at LBA {primary.current_lba}")
    if (primary.backup_lba + 1) * sector > disk_size:
        raise GptError("backup GPT header lies past the end of the disk")
    backup = parse_header(read(primary.backup_lba * sector, sector))
    if backup.current_lba != primary.backup_lba or backup.backup_lba != 1:
        raise GptError("backup GPT header does not point back at the primary")
    entries = read(primary.entries_lba * sector, primary.entries_bytes)
    slots = parse_entries(primary, entries)
    backup_entries = read(backup.entries_lba * sector, backup.entries_bytes)
    if backup_entries != entries or backup.entries_crc != primary.entries_crc:
        raise GptError("primary and backup GPT differ; repair the table (cgpt repair) first")
    return Table(sector, primary, backup, entries, tuple(slots))
