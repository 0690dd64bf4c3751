"""One download-and-verify of a payload along the engine's path, in a process of its own.

Usage: ``python bench/update/stream.py PAYLOAD TARGET PUBKEY SHA256_HEX [--chunk BYTES]
[--serial-hash]``

The payload file plays the download (read in ``--chunk`` pieces, as the engine's HTTP
stream hands them over); each piece goes through :class:`PayloadReader` with the
resumable hasher, its writes go into TARGET with ``pwrite`` as the engine's slot writer
does, a checkpoint is taken every 8 MiB as the engine takes them, then ``finish``
checks size, SHA-256 and signature. The written partition is then read back and hashed
against the manifest, as the engine verifies the slot before flipping it. No fsync, so
the disk's speed stays out of the figure. It prints JSON: seconds streaming, seconds
reading back, and the process's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from flotilla.daemons.update import payload
from flotilla.daemons.update.payload import PayloadReader, check_written_partition
from flotilla.daemons.update.resumable_sha256 import ResumableSha256

CHECKPOINT_BYTES = 8 << 20  # the engine's CHECKPOINT_BYTES
READ_BACK = 1 << 20  # the engine's HASH_CHUNK


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_all(fd: int, offset: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("payload", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("pubkey", type=Path)
    parser.add_argument("sha256")
    parser.add_argument("--chunk", type=int, default=1 << 20)
    parser.add_argument("--serial-hash", action="store_true",
                        help="hash each operation on this thread too (for comparison)")
    args = parser.parse_args()
    if args.serial_hash:
        payload.PARALLEL_HASH_BYTES = 1 << 62
    key = serialization.load_pem_public_key(args.pubkey.read_bytes())
    size = args.payload.stat().st_size
    start = time.perf_counter()
    out = os.open(args.target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(out, size)  # the slot: at least as large as the image
    reader = PayloadReader(expected_size=size, expected_sha256=bytes.fromhex(args.sha256),
                           partition_size=size, public_key=key,  # type: ignore[arg-type]
                           hasher=ResumableSha256)
    saved_at = 0
    with args.payload.open("rb", buffering=0) as source:
        while chunk := source.read(args.chunk):
            for write in reader.feed(chunk):
                write_all(out, write.offset, write.data)
            if reader.offset - saved_at >= CHECKPOINT_BYTES:
                saved_at = reader.checkpoint().offset
    manifest = reader.finish()
    streamed = time.perf_counter()
    digest, done, length = hashlib.sha256(), 0, manifest.new_partition_info.size
    while done < length:
        piece = os.pread(out, min(READ_BACK, length - done), done)
        digest.update(piece)
        done += len(piece)
    check_written_partition(manifest, digest.digest())
    os.close(out)
    verified = time.perf_counter()
    print(json.dumps({"stream_s": streamed - start, "read_back_s": verified - streamed,
                      "peak_rss_kib": peak_rss_kib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
