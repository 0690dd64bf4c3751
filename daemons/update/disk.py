"""The block-device shell under ``gpt``: read ranges, apply writes in order with fsync.

Kept apart from the durable-file helper on purpose: partition tables are rewritten in
place at fixed offsets (a file-style rename cannot exist on a disk), and the order of the
four writes is what keeps one valid table through a crash, so each write is synced before
the next one starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from . import gpt


def disk_size(fd: int) -> int:
    """Size in bytes of a block device or image file."""
    return os.lseek(fd, 0, os.SEEK_END)


def read_table(path: str, sector: int = 512) -> gpt.Table:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return gpt.read_table(lambda offset, length: os.pread(fd, length, offset),
                              disk_size(fd), sector)
    finally:
        os.close(fd)


def apply_writes(fd: int, writes: Iterable[gpt.Write]) -> None:
    """Each write whole and synced before the next (a crash leaves one valid table)."""
    for write in writes:
        view = memoryview(write.data)
        offset = write.offset
        while view:
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done
        os.fsync(fd)


def set_attributes(path: str, attributes: Mapping[int, int], sector: int = 512) -> gpt.Table:
    """Rewrite the attribute words of partitions on the disk at ``path``; returns the new table."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        table = gpt.read_table(lambda offset, length: os.pread(fd, length, offset),
                               disk_size(fd), sector)
        apply_writes(fd, table.set_attributes(attributes))
        return gpt.read_table(lambda offset, length: os.pread(fd, length, offset),
                              disk_size(fd), sector)
    finally:
        os.close(fd)
