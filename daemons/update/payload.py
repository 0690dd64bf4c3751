"""Reading a ``CrAU`` full payload as it streams in: bounded memory, checked at every step.

A payload is ``"CrAU"``, a big-endian u64 format version (1), a big-endian u64 manifest
size, the protobuf manifest, the operations' data blobs in order, and a ``Signatures``
blob. :class:`PayloadReader` is fed the bytes in any chunking and returns the partition
writes each completed operation makes; it never holds more than one operation's data.
Every blob is checked against its operation's SHA-256 before a byte of it is handed out,
extents must lie inside the target partition, compressed data may not inflate past its
extents, and :meth:`PayloadReader.finish` checks the whole payload's size and SHA-256
(against the Omaha answer) and the RSA-2048 PKCS#1 v1.5 SHA-256 signature over every
byte before the signature blob, as update_engine does. Errors carry update_engine's codes.

The reader does no I/O: the shell writes what it returns, and may persist a
:meth:`checkpoint` after the writes are on disk to resume a broken download where the
last whole operation ended.

It is on the engine's download path, so each byte is copied once after it arrives (into
its operation's blob) and hashed twice (the payload's SHA-256, the operation's): the
signed hash is the payload hash's state before the signature blob, not a third pass, and
a REPLACE operation's write hands out the blob itself. ``bench/update`` measures it.
"""

from __future__ import annotations

import bz2
import dataclasses
import hashlib
import lzma
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from . import manifest as M
from .codes import ErrorCode

MAGIC = b"CrAU"
FORMAT_VERSION = 1
HEADER = struct.Struct(">4sQQ")
#: Signature message version update_engine accepts.
SIGNATURE_VERSION = 2
#: Bounds that keep a hostile payload from costing more than a few dozen MiB.
MAX_MANIFEST_BYTES = 4 << 20
MAX_OPERATION_BYTES = 16 << 20
MAX_SIGNATURES_BYTES = 64 << 10
SPARSE_HOLE = (1 << 64) - 1
#: Blobs from this size up get their own SHA-256 on a second thread (see _perform).
PARALLEL_HASH_BYTES = 256 << 10

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    """One worker thread for operation hashes, started on first use and shared."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="payload-sha256")
        return _pool


def _sha256(data: bytearray) -> bytes:
    return hashlib.sha256(data).digest()


class PayloadError(Exception):
    """The payload cannot be applied; ``code`` is update_engine's error code for why."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Hasher(Protocol):
    """A SHA-256 in progress; resumable ones also export and restore their state."""

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class PartitionWrite:
    """Bytes to put at ``offset`` of the target partition, from operation ``operation``.

    ``data`` is bytes or, for a REPLACE operation, the operation's own bytearray, which
    the reader never touches again.
    """

    operation: int
    offset: int
    data: bytes | bytearray


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Where a download can resume: after operation ``next_operation - 1`` was written.

    ``offset`` is the payload offset to fetch from next; ``metadata`` is the header and
    manifest (small, re-parsed on resume); the two hash states come from resumable
    hashers (see ``resumable_sha256``).
    """

    offset: int
    next_operation: int
    metadata: bytes
    payload_hash_state: bytes
    signed_hash_state: bytes  # equal to payload_hash_state: every byte so far is signed


def _default_hasher() -> Hasher:
    return hashlib.sha256()


class PayloadReader:
    """Feed a payload's bytes in; take partition writes out; ``finish`` to verify it all."""

    def __init__(
        self,
        *,
        expected_size: int,
        expected_sha256: bytes,
        partition_size: int,
        public_key: rsa.RSAPublicKey | None,
        hasher: Callable[[], Hasher] = _default_hasher,
    ) -> None:
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.partition_size = partition_size
        self.public_key = public_key
        self._new_hasher = hasher
        # Every byte, for the Omaha sha256; its digest before the signature blob is the
        # digest the signature covers.
        self._payload_hash = hasher()
        self._buffer = bytearray()  # header, manifest, signature bytes not yet consumed
        self._blob: bytearray | None = None  # the current operation's data, filling
        self._filled = 0
        self._extents: list[tuple[int, int]] = []
        self._offset = 0  # payload bytes consumed (hashed) so far
        self._metadata = b""
        self.manifest: M.Message | None = None
        self._operations: list[M.Message] = []
        self._next = 0
        self._data_offset = 0  # offset inside the blob area the next blob must start at
        self._signature_blob: bytes | None = None
        self._signed_digest: bytes | None = None

    # -- feeding ------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Payload bytes received so far (consumed or buffered)."""
        return self._offset + len(self._buffer) + (self._filled if self._blob is not None else 0)

    def feed(self, data: bytes | bytearray | memoryview) -> list[PartitionWrite]:
        """Take the next bytes of the payload; return the writes of operations they finish."""
        if self.offset + len(data) > self.expected_size:
            raise PayloadError(ErrorCode.PAYLOAD_SIZE_MISMATCH,
                               f"payload is longer than the {self.expected_size} bytes offered")
        writes: list[PartitionWrite] = []
        view = memoryview(data).cast("B")
        if self.manifest is None:
            self._buffer += view
            if not self._read_metadata():
                return writes
            view = memoryview(bytes(self._buffer))  # what followed the manifest
            self._buffer.clear()
        while self._next < len(self._operations):
            if self._blob is None:
                self._extents = self._check_operation(self._next)
                self._blob = bytearray(self._operations[self._next].data_length)
                self._filled = 0
            take = min(len(view), len(self._blob) - self._filled)
            self._blob[self._filled:self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled < len(self._blob):
                return writes
            blob, self._blob = self._blob, None
            writes.extend(self._perform(self._next, blob))
            self._next += 1
        self._buffer += view
        self._read_signatures()
        return writes

    def _consume(self, count: int) -> bytes:
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._payload_hash.update(chunk)
        self._offset += count
        return chunk

    def _read_metadata(self) -> bool:
        if len(self._buffer) < HEADER.size:
            return False
        magic, version, manifest_size = HEADER.unpack_from(self._buffer)
        if magic != MAGIC:
            raise PayloadError(ErrorCode.DOWNLOAD_INVALID_METADATA_MAGIC_STRING,
                               f"payload starts with {bytes(magic)!r}, not {MAGIC!r}")
        if version != FORMAT_VERSION:
            raise PayloadError(ErrorCode.DOWNLOAD_MANIFEST_PARSE_ERROR,
                               f"payload format version {version}, expected {FORMAT_VERSION}")
        if manifest_size > MAX_MANIFEST_BYTES or HEADER.size + manifest_size > self.expected_size:
            raise PayloadError(ErrorCode.DOWNLOAD_INVALID_METADATA_SIZE,
                               f"manifest of {manifest_size} bytes is too large")
        if len(self._buffer) < HEADER.size + manifest_size:
            return False
        self._metadata = self._consume(HEADER.size + manifest_size)
        self._load_manifest(self._metadata[HEADER.size:])
        return True

    def _load_manifest(self, raw: bytes) -> None:
        try:
            manifest = M.decode(M.DeltaArchiveManifest, raw)
        except ValueError as err:
            raise PayloadError(ErrorCode.DOWNLOAD_MANIFEST_PARSE_ERROR, str(err)) from err
        block = manifest.block_size
        if block < 512 or block > (1 << 20) or block & (block - 1):
            raise PayloadError(ErrorCode.DOWNLOAD_MANIFEST_PARSE_ERROR,
                               f"block size {block} is not a power of two in 512..1M")
        if len(manifest.procedures):
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                               "kernel and PCR procedures are not supported")
        info = manifest.new_partition_info
        if not manifest.HasField("new_partition_info") or len(info.hash) != 32:
            raise PayloadError(ErrorCode.DOWNLOAD_NEW_PARTITION_INFO_ERROR,
                               "manifest has no new partition size and SHA-256")
        if info.size > self.partition_size:
            raise PayloadError(ErrorCode.DOWNLOAD_NEW_PARTITION_INFO_ERROR,
                               f"new /usr of {info.size} bytes does not fit the "
                               f"{self.partition_size}-byte partition")
        signed = manifest.HasField("signatures_offset") and manifest.HasField("signatures_size")
        if self.public_key is not None and not signed:
            raise PayloadError(ErrorCode.SIGNED_DELTA_PAYLOAD_EXPECTED,
                               "payload is unsigned but a payload key is installed")
        if signed and not 0 < manifest.signatures_size <= MAX_SIGNATURES_BYTES:
            raise PayloadError(ErrorCode.DOWNLOAD_SIGNATURE_MISSING_IN_MANIFEST,
                               f"signature blob of {manifest.signatures_size} bytes")
        self.manifest = manifest
        self._operations = list(manifest.partition_operations)

    def _check_operation(self, index: int) -> list[tuple[int, int]]:
        """Refuse a bogus operation before any of its data is taken; return its extents."""
        op = self._operations[index]
        where = f"operation {index}"
        if op.type not in (M.REPLACE, M.REPLACE_BZ, M.REPLACE_XZ):
            name = M.OPERATION_NAMES.get(op.type, str(op.type))
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                               f"{where}: {name} needs a source; only full payloads apply")
        if op.data_offset != self._data_offset:
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                               f"{where}: data at {op.data_offset}, expected {self._data_offset}")
        if not 0 < op.data_length <= MAX_OPERATION_BYTES:
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                               f"{where}: data length {op.data_length}")
        if len(op.data_sha256_hash) != 32:
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_HASH_MISSING_ERROR,
                               f"{where} has no SHA-256 of its data")
        return self._destination(op, where)

    def _perform(self, index: int, blob: bytearray) -> list[PartitionWrite]:
        """The writes of operation ``index`` once its whole blob has arrived."""
        op = self._operations[index]
        where = f"operation {index}"
        # The blob's two hashes are independent and both release the GIL (hashlib for
        # large data, libcrypto through ctypes), so a large blob's own hash runs on a
        # second core while this thread feeds the payload hash: the hashing takes the
        # time of one pass instead of two. Nothing else is shared; the result is the same.
        own = _hash_pool().submit(_sha256, blob) if len(blob) >= PARALLEL_HASH_BYTES else None
        self._payload_hash.update(blob)
        self._offset += len(blob)
        self._data_offset += len(blob)
        digest = own.result() if own is not None else _sha256(blob)
        if digest != op.data_sha256_hash:
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_HASH_MISMATCH,
                               f"{where}: data does not match its SHA-256")
        extents = self._extents
        wanted = sum(length for _, length in extents)
        data = self._expand(op.type, blob, wanted, where)
        if len(extents) == 1:
            return [PartitionWrite(index, extents[0][0], data)]
        writes, position = [], 0
        for start, length in extents:
            writes.append(PartitionWrite(index, start, bytes(data[position:position + length])))
            position += length
        return writes

    def _destination(self, op: M.Message, where: str) -> list[tuple[int, int]]:
        block = self.manifest.block_size  # type: ignore[union-attr]
        extents = []
        for extent in op.dst_extents:
            start, count = extent.start_block, extent.num_blocks
            if start == SPARSE_HOLE or count == 0:
                raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                                   f"{where}: empty or sparse destination extent")
            if (start + count) * block > self.partition_size:
                raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                                   f"{where}: blocks {start}+{count} lie past the partition")
            extents.append((start * block, count * block))
        if not extents or sum(n for _, n in extents) > MAX_OPERATION_BYTES:
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                               f"{where}: destination of {sum(n for _, n in extents)} bytes")
        return extents

    @staticmethod
    def _expand(kind: int, blob: bytearray, wanted: int, where: str) -> bytes | bytearray:
        try:
            if kind == M.REPLACE:
                data = blob
            else:
                inflater = (bz2.BZ2Decompressor() if kind == M.REPLACE_BZ
                            else lzma.LZMADecompressor(format=lzma.FORMAT_XZ))
                data = inflater.decompress(blob, max_length=wanted + 1)
                if not inflater.eof and len(data) <= wanted:
                    raise ValueError("compressed stream ends early")
                if inflater.eof and inflater.unused_data:
                    raise ValueError("bytes follow the end of the compressed stream")
        except (OSError, EOFError, ValueError, lzma.LZMAError) as err:
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                               f"{where}: cannot decompress: {err}") from err
        if len(data) != wanted:
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                               f"{where}: {len(data)} bytes of data for {wanted} bytes of blocks")
        return data

    def _read_signatures(self) -> None:
        manifest = self.manifest
        if manifest is None or self._signature_blob is not None:
            return
        if not manifest.HasField("signatures_offset"):
            return
        if manifest.signatures_offset != self._data_offset:
            raise PayloadError(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
                               f"signatures at data offset {manifest.signatures_offset}, "
                               f"expected {self._data_offset}")
        if len(self._buffer) < manifest.signatures_size:
            return
        self._signed_digest = self._payload_hash.digest()  # every byte so far is signed
        self._signature_blob = self._consume(manifest.signatures_size)

    # -- resuming -----------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The state after the last whole operation, for a resumable hasher's reader."""
        export = getattr(self._payload_hash, "export", None)
        if export is None:
            raise TypeError("checkpoints need a resumable hasher")
        state = export()
        return Checkpoint(
            offset=self._offset,
            next_operation=self._next,
            metadata=self._metadata,
            payload_hash_state=state,
            signed_hash_state=state,
        )

    def resume(self, checkpoint: Checkpoint, restore: Callable[[bytes], Hasher]) -> None:
        """Continue from ``checkpoint`` (a fresh reader); fetch from ``checkpoint.offset``."""
        if self._offset or self._buffer or self._blob is not None:
            raise RuntimeError("resume a fresh reader")
        if not checkpoint.metadata:
            return
        self._load_manifest(checkpoint.metadata[HEADER.size:])
        self._metadata = checkpoint.metadata
        if not 0 <= checkpoint.next_operation <= len(self._operations):
            raise PayloadError(ErrorCode.DOWNLOAD_STATE_INITIALIZATION_ERROR,
                               f"checkpoint at operation {checkpoint.next_operation}")
        self._next = checkpoint.next_operation
        self._data_offset = sum(op.data_length for op in self._operations[: self._next])
        if checkpoint.offset != len(checkpoint.metadata) + self._data_offset:
            raise PayloadError(ErrorCode.DOWNLOAD_STATE_INITIALIZATION_ERROR,
                               f"checkpoint offset {checkpoint.offset} does not match "
                               f"operation {self._next}")
        if checkpoint.signed_hash_state != checkpoint.payload_hash_state:
            raise PayloadError(ErrorCode.DOWNLOAD_STATE_INITIALIZATION_ERROR,
                               "checkpoint hash states differ before the signature")
        self._offset = checkpoint.offset
        self._payload_hash = restore(checkpoint.payload_hash_state)

    # -- verifying ----------------------------------------------------------------

    def finish(self) -> M.Message:
        """Check the whole payload once every byte was fed; return the verified manifest."""
        if self.manifest is None or self._next < len(self._operations):
            raise PayloadError(ErrorCode.DOWNLOAD_TRANSFER_ERROR,
                               f"payload ended after {self.offset} of {self.expected_size} bytes")
        if self.offset != self.expected_size or self._buffer or self._blob is not None:
            raise PayloadError(ErrorCode.PAYLOAD_SIZE_MISMATCH,
                               f"payload is {self.offset} bytes, the server said "
                               f"{self.expected_size}")
        if self._payload_hash.digest() != self.expected_sha256:
            raise PayloadError(ErrorCode.PAYLOAD_HASH_MISMATCH,
                               "payload SHA-256 differs from the server's")
        if self.public_key is None:
            return self.manifest
        if self._signature_blob is None or self._signed_digest is None:
            raise PayloadError(ErrorCode.SIGNED_DELTA_PAYLOAD_EXPECTED, "payload has no signature")
        verify_signature(self._signature_blob, self._signed_digest, self.public_key)
        return self.manifest


def verify_signature(blob: bytes, digest: bytes, key: rsa.RSAPublicKey) -> None:
    """Check a ``Signatures`` blob's version-2 signature over ``digest`` (SHA-256)."""
    failure = ErrorCode.DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR
    try:
        signatures = M.decode(M.Signatures, blob)
    except ValueError as err:
        raise PayloadError(failure, str(err)) from err
    candidates = [s.data for s in signatures.signatures if s.version == SIGNATURE_VERSION]
    if not candidates:
        raise PayloadError(failure, f"no version {SIGNATURE_VERSION} signature in the payload")
    for signature in candidates:
        try:
            key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
            return
        except InvalidSignature:
            continue
    raise PayloadError(failure, "payload signature does not verify with the payload key")


def check_written_partition(manifest: M.Message, digest: bytes) -> None:
    """The SHA-256 of the partition's first ``new_partition_info.size`` bytes must match."""
    if digest != manifest.new_partition_info.hash:
        raise PayloadError(ErrorCode.NEW_ROOTFS_VERIFICATION_ERROR,
                           "written /usr does not match the manifest's SHA-256")
