"""Cutting a release: the pure half of building a signed ``CrAU`` full payload.

The image is cut into chunks of whole blocks; each chunk becomes one REPLACE, REPLACE_BZ
or REPLACE_XZ operation (whichever is smallest) with the SHA-256 of its blob. Since the
manifest precedes the blobs but describes them, the builder is fed every chunk first,
hands each blob back for the caller to spool, and only then lays out the header and
manifest. The signature covers the header, the manifest and every blob, and its size is
fixed in advance (one version-2 signature of the key's modulus size), so the manifest can
name the signature blob's offset and size before the signature exists.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma

from . import manifest as M
from .payload import FORMAT_VERSION, HEADER, MAGIC, MAX_OPERATION_BYTES, SIGNATURE_VERSION

DEFAULT_CHUNK = 1 << 20
COMPRESSIONS = ("xz", "bz2", "none")


def compress_chunk(raw: bytes, compression: str) -> tuple[int, bytes]:
    """The operation type and blob for one chunk: compressed only when that is smaller.

    Pure and independent per chunk, so a caller may run it on several chunks at once
    (lzma and bz2 release the GIL) and hand the results to
    :meth:`PayloadBuilder.add_compressed` in image order.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
    if compression == "none":
        return M.REPLACE, raw
    if compression == "bz2":
        packed = bz2.compress(raw, 9)
        kind = M.REPLACE_BZ
    else:
        packed = lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
        kind = M.REPLACE_XZ
    return (kind, packed) if len(packed) < len(raw) else (M.REPLACE, raw)


class PayloadBuilder:
    """Collects operations chunk by chunk; lays out the metadata at the end."""

    def __init__(self, *, block_size: int = 4096, compression: str = "xz") -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        self.block_size = block_size
        self.compression = compression
        self._manifest = M.DeltaArchiveManifest(block_size=block_size)
        self._data_offset = 0
        self._next_block = 0

    def add_chunk(self, raw: bytes) -> bytes:
        """The next chunk of the image (whole blocks, the last zero-padded); returns its blob."""
        if not raw or len(raw) % self.block_size:
            raise ValueError(f"chunks are whole {self.block_size}-byte blocks")
        if len(raw) > MAX_OPERATION_BYTES:
            raise ValueError(f"chunks are at most {MAX_OPERATION_BYTES} bytes")
        kind, blob = compress_chunk(raw, self.compression)
        self.add_compressed(kind, blob, len(raw))
        return blob

    def add_compressed(self, kind: int, blob: bytes, raw_length: int) -> None:
        """Record the next chunk's operation from :func:`compress_chunk`'s result."""
        if not raw_length or raw_length % self.block_size:
            raise ValueError(f"chunks are whole {self.block_size}-byte blocks")
        if raw_length > MAX_OPERATION_BYTES:
            raise ValueError(f"chunks are at most {MAX_OPERATION_BYTES} bytes")
        if kind not in (M.REPLACE, M.REPLACE_BZ, M.REPLACE_XZ):
            raise ValueError(f"operation type {kind} is not a full-payload REPLACE")
        op = self._manifest.partition_operations.add()
        op.type = kind
        op.data_offset = self._data_offset
        op.data_length = len(blob)
        op.data_sha256_hash = hashlib.sha256(blob).digest()
        extent = op.dst_extents.add()
        extent.start_block = self._next_block
        extent.num_blocks = raw_length // self.block_size
        op.dst_length = raw_length
        self._data_offset += len(blob)
        self._next_block += extent.num_blocks

    @property
    def blocks(self) -> int:
        """Blocks of the image covered by the operations so far."""
        return self._next_block

    @property
    def data_size(self) -> int:
        """Bytes of operation data (blobs) so far: where the signature blob will start."""
        return self._data_offset

    def metadata(self, image_size: int, image_sha256: bytes, signature_size: int | None) -> bytes:
        """Header and manifest; ``signature_size`` None makes an unsigned payload."""
        manifest = M.DeltaArchiveManifest()
        manifest.CopyFrom(self._manifest)
        manifest.new_partition_info.size = image_size
        manifest.new_partition_info.hash = image_sha256
        if signature_size is not None:
            manifest.signatures_offset = self._data_offset
            manifest.signatures_size = signature_size
        raw = manifest.SerializeToString()
        return HEADER.pack(MAGIC, FORMAT_VERSION, len(raw)) + raw


def signatures_blob(signature: bytes) -> bytes:
    """The ``Signatures`` message carrying one version-2 signature."""
    message = M.Signatures()
    entry = message.signatures.add()
    entry.version = SIGNATURE_VERSION
    entry.data = signature
    return message.SerializeToString()


def signature_blob_size(key_bytes: int) -> int:
    """The size of :func:`signatures_blob` for an RSA key of ``key_bytes`` modulus bytes."""
    return len(signatures_blob(b"\0" * key_bytes))
