"""Payload building and streaming verification: good payloads apply, every fault is named."""

from __future__ import annotations

import bz2
import functools
import hashlib
import os
import random
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from flotilla.daemons.update import manifest as M
from flotilla.daemons.update import payload as P
from flotilla.daemons.update.codes import ErrorCode
from flotilla.daemons.update.payload_gen import (
    PayloadBuilder,
    signature_blob_size,
    signatures_blob,
)
from flotilla.daemons.update.resumable_sha256 import ResumableSha256

BLOCK = 4096
PARTITION = 64 * BLOCK


@functools.cache
def key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def image(size: int = 10 * BLOCK + 123, seed: int = 1) -> bytes:
    """Compressible text, then random bytes, so raw and compressed operations both show up."""
    rng = random.Random(seed)
    half = size // 2
    text = (b"flotilla /usr " * (half // 14 + 1))[:half]
    return text + rng.randbytes(size - half)


def build(data: bytes, *, signer: rsa.RSAPrivateKey | None = None, chunk: int = 3 * BLOCK,
          compression: str = "xz", tamper: Callable[[M.Message], None] | None = None) -> bytes:
    builder = PayloadBuilder(block_size=BLOCK, compression=compression)
    blobs = []
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        piece += b"\0" * (-len(piece) % BLOCK)
        blobs.append(builder.add_chunk(piece))
    size = signature_blob_size(256) if signer else None
    metadata = builder.metadata(len(data), hashlib.sha256(data).digest(), size)
    if tamper is not None:
        manifest = M.decode(M.DeltaArchiveManifest, metadata[P.HEADER.size:])
        tamper(manifest)
        raw = manifest.SerializeToString()
        metadata = P.HEADER.pack(P.MAGIC, 1, len(raw)) + raw
    body = metadata + b"".join(blobs)
    if signer is None:
        return body
    digest = hashlib.sha256(body).digest()
    signature = signer.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    return body + signatures_blob(signature)


def reader_for(
    payload: bytes, public: rsa.RSAPublicKey | None, **changes: object
) -> P.PayloadReader:
    args: dict = {"expected_size": len(payload), "partition_size": PARTITION,
                  "expected_sha256": hashlib.sha256(payload).digest(), "public_key": public}
    args.update(changes)
    return P.PayloadReader(**args)


def apply(reader: P.PayloadReader, payload: bytes, step: int) -> bytearray:
    disk = bytearray(PARTITION)
    for start in range(0, len(payload), step):
        for write in reader.feed(payload[start:start + step]):
            disk[write.offset:write.offset + len(write.data)] = write.data
    return disk


@pytest.mark.parametrize("compression", ["xz", "bz2", "none"])
@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_signed_payload_applies_in_any_chunking(compression: str, step: int) -> None:
    data = image()
    payload = build(data, signer=key("release"), compression=compression)
    reader = reader_for(payload, key("release").public_key())
    disk = apply(reader, payload, step)
    manifest = reader.finish()
    assert bytes(disk[:len(data)]) == data
    written = hashlib.sha256(disk[:manifest.new_partition_info.size]).digest()
    P.check_written_partition(manifest, written)
    with pytest.raises(P.PayloadError) as caught:
        P.check_written_partition(manifest, hashlib.sha256(b"other").digest())
    assert caught.value.code == ErrorCode.NEW_ROOTFS_VERIFICATION_ERROR
    kinds = {op.type for op in manifest.partition_operations}
    expected = {"xz": {M.REPLACE_XZ, M.REPLACE}, "bz2": {M.REPLACE_BZ, M.REPLACE},
                "none": {M.REPLACE}}[compression]
    assert kinds == expected  # random chunks stay raw, text chunks compress


def expect(code: ErrorCode, words: str, run: Callable[[], object]) -> None:
    with pytest.raises(P.PayloadError) as caught:
        run()
    assert caught.value.code == code, caught.value
    assert words in str(caught.value)


def test_truncated_payload_fails_at_finish_with_a_transfer_error() -> None:
    payload = build(image(), signer=key("release"))
    for cut in (10, P.HEADER.size + 5, len(payload) // 2, len(payload) - 1):
        reader = reader_for(payload, key("release").public_key())
        reader.feed(payload[:cut])
        code = (ErrorCode.PAYLOAD_SIZE_MISMATCH if cut == len(payload) - 1
                else ErrorCode.DOWNLOAD_TRANSFER_ERROR)
        expect(code, "payload", reader.finish)


def test_wrong_total_hash_or_size_from_the_server_is_refused() -> None:
    payload = build(image())
    reader = reader_for(payload, None, expected_sha256=b"\1" * 32)
    reader.feed(payload)
    expect(ErrorCode.PAYLOAD_HASH_MISMATCH, "SHA-256", reader.finish)
    reader = reader_for(payload, None, expected_size=len(payload) - 1)
    expect(ErrorCode.PAYLOAD_SIZE_MISMATCH, "longer", lambda: reader.feed(payload))


def test_wrong_signature_and_wrong_key_are_refused() -> None:
    payload = bytearray(build(image(), signer=key("release")))
    payload[-10] ^= 0xFF  # inside the signature bytes
    reader = reader_for(bytes(payload), key("release").public_key())
    reader.feed(bytes(payload))
    expect(ErrorCode.DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR, "does not verify", reader.finish)
    good = build(image(), signer=key("release"))
    reader = reader_for(good, key("attacker").public_key())
    reader.feed(good)
    expect(ErrorCode.DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR, "does not verify", reader.finish)


def test_signed_by_another_key_over_tampered_data_is_refused() -> None:
    """An attacker re-signs a changed image with their own key: the installed key says no."""
    evil = build(image(seed=2), signer=key("attacker"))
    reader = reader_for(evil, key("release").public_key())
    reader.feed(evil)
    expect(ErrorCode.DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR, "does not verify", reader.finish)


def test_unsigned_payload_is_refused_when_a_key_is_installed() -> None:
    payload = build(image())
    expect(ErrorCode.SIGNED_DELTA_PAYLOAD_EXPECTED, "unsigned",
           lambda: reader_for(payload, key("release").public_key()).feed(payload))
    reader = reader_for(payload, None)
    apply(reader, payload, 4096)
    reader.finish()  # without a key an unsigned payload is accepted, as upstream


def test_signature_blob_without_a_version_2_entry_is_refused() -> None:
    message = M.Signatures()
    entry = message.signatures.add()
    entry.version = 1
    entry.data = b"x" * 256
    expect(ErrorCode.DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR, "no version 2",
           lambda: P.verify_signature(message.SerializeToString(), b"\0" * 32,
                                      key("release").public_key()))
    expect(ErrorCode.DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR, "malformed",
           lambda: P.verify_signature(b"\x0a\xff", b"\0" * 32, key("release").public_key()))


def header(magic: bytes = P.MAGIC, version: int = 1, size: int = 10) -> bytes:
    return struct.pack(">4sQQ", magic, version, size)


@pytest.mark.parametrize(
    "body,code,words",
    [
        (header(magic=b"PK\3\4") + b"\0" * 10, ErrorCode.DOWNLOAD_INVALID_METADATA_MAGIC_STRING,
         "not b'CrAU'"),
        (header(version=2) + b"\0" * 10, ErrorCode.DOWNLOAD_MANIFEST_PARSE_ERROR, "version 2"),
        (header(size=P.MAX_MANIFEST_BYTES + 1) + b"\0" * 10,
         ErrorCode.DOWNLOAD_INVALID_METADATA_SIZE, "too large"),
        (header(size=1 << 62) + b"\0" * 10, ErrorCode.DOWNLOAD_INVALID_METADATA_SIZE, "too large"),
        (header(size=3) + b"\x0a\xff\x01" + b"\0" * 7, ErrorCode.DOWNLOAD_MANIFEST_PARSE_ERROR,
         "malformed"),
        (header(size=0) + b"\0" * 10, ErrorCode.DOWNLOAD_NEW_PARTITION_INFO_ERROR,
         "no new partition"),
    ],
)
def test_bad_headers_and_manifests_are_refused(body: bytes, code: ErrorCode, words: str) -> None:
    reader = reader_for(body, None)
    expect(code, words, lambda: reader.feed(body))


def _first_op(change: Callable[[M.Message], None]) -> Callable[[M.Message], None]:
    return lambda manifest: change(manifest.partition_operations[0])


def _set(field: str, value: object) -> Callable[[M.Message], None]:
    return _first_op(lambda op: setattr(op, field, value))


def _extent(start: int, count: int) -> Callable[[M.Message], None]:
    def change(op: M.Message) -> None:
        op.dst_extents[0].start_block = start
        op.dst_extents[0].num_blocks = count
    return _first_op(change)


@pytest.mark.parametrize(
    "tamper,code,words",
    [
        (_set("type", M.MOVE), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR, "MOVE needs a source"),
        (_set("type", M.BSDIFF), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR, "BSDIFF"),
        (_set("data_offset", 5), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR, "data at 5"),
        (_set("data_length", 0), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR, "data length 0"),
        (_set("data_sha256_hash", b""), ErrorCode.DOWNLOAD_OPERATION_HASH_MISSING_ERROR, "no SHA"),
        (_set("data_sha256_hash", b"\0" * 32), ErrorCode.DOWNLOAD_OPERATION_HASH_MISMATCH,
         "does not match"),
        (_extent(PARTITION // BLOCK - 1, 3), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
         "past the partition"),
        (_extent(P.SPARSE_HOLE, 3), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR, "sparse"),
        (_extent(0, 0), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR, "empty"),
        (_extent(0, 1), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR, "for 4096 bytes of blocks"),
        (lambda m: setattr(m, "block_size", 1000), ErrorCode.DOWNLOAD_MANIFEST_PARSE_ERROR,
         "block size"),
        (lambda m: setattr(m.new_partition_info, "size", PARTITION + 1),
         ErrorCode.DOWNLOAD_NEW_PARTITION_INFO_ERROR, "does not fit"),
        (lambda m: m.procedures.add(), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
         "procedures"),
        (lambda m: setattr(m, "signatures_offset", 1), ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR,
         "signatures at data offset 1"),
    ],
)
def test_bogus_operations_are_refused_before_anything_is_written(
    tamper: Callable[[M.Message], None], code: ErrorCode, words: str
) -> None:
    payload = build(image(), signer=key("release"), tamper=tamper)
    reader = reader_for(payload, key("release").public_key())
    writes: list[P.PartitionWrite] = []

    def run() -> None:
        for start in range(0, len(payload), 512):
            writes.extend(reader.feed(payload[start:start + 512]))
        reader.finish()

    expect(code, words, run)
    if "signatures" not in words:  # the signature's place is known only after the last blob
        assert writes == []


def test_no_write_comes_from_an_operation_whose_data_was_tampered() -> None:
    payload = bytearray(build(image(), compression="none"))
    manifest_end = P.HEADER.size + struct.unpack(">Q", payload[12:20])[0]
    payload[manifest_end + 3 * BLOCK + 100] ^= 1  # inside the second operation's blob
    reader = reader_for(bytes(payload), None)
    writes: list[P.PartitionWrite] = []
    with pytest.raises(P.PayloadError) as caught:
        for start in range(0, len(payload), 1000):
            writes.extend(reader.feed(bytes(payload[start:start + 1000])))
    assert caught.value.code == ErrorCode.DOWNLOAD_OPERATION_HASH_MISMATCH
    assert {w.operation for w in writes} == {0}


def test_compression_bombs_and_trailing_bytes_are_refused() -> None:
    bomb = bz2.compress(b"\0" * (8 * BLOCK))  # inflates past its one-block extent

    def swap_blob(blob: bytes, blocks: int) -> bytes:
        builder = PayloadBuilder(block_size=BLOCK, compression="none")
        builder.add_chunk(b"\0" * blocks * BLOCK)
        meta = builder.metadata(BLOCK, hashlib.sha256(b"\0" * BLOCK).digest(), None)
        manifest = M.decode(M.DeltaArchiveManifest, meta[P.HEADER.size:])
        op = manifest.partition_operations[0]
        op.type, op.data_length = M.REPLACE_BZ, len(blob)
        op.data_sha256_hash = hashlib.sha256(blob).digest()
        raw = manifest.SerializeToString()
        return P.HEADER.pack(P.MAGIC, 1, len(raw)) + raw + blob

    payload = swap_blob(bomb, 1)
    expect(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR, "for 4096 bytes",
           lambda: reader_for(payload, None).feed(payload))
    payload = swap_blob(bz2.compress(b"\0" * BLOCK) + b"junk", 1)
    expect(ErrorCode.DOWNLOAD_OPERATION_EXECUTION_ERROR, "follow the end",
           lambda: reader_for(payload, None).feed(payload))


def test_download_resumes_from_a_checkpoint_with_the_same_result() -> None:
    data = image(40 * BLOCK)
    payload = build(data, signer=key("release"), chunk=4 * BLOCK)
    public = key("release").public_key()
    first = reader_for(payload, public, hasher=ResumableSha256)
    disk = bytearray(PARTITION)
    checkpoint = None
    for start in range(0, len(payload) * 2 // 3, 5000):
        for write in first.feed(payload[start:start + 5000]):
            disk[write.offset:write.offset + len(write.data)] = write.data
        checkpoint = first.checkpoint()
    assert checkpoint is not None and 0 < checkpoint.next_operation < 10
    # A new process: a fresh reader continues from the checkpoint's offset.
    second = reader_for(payload, public, hasher=ResumableSha256)
    second.resume(checkpoint, ResumableSha256.restore)
    for write in second.feed(payload[checkpoint.offset:]):
        assert write.operation >= checkpoint.next_operation
        disk[write.offset:write.offset + len(write.data)] = write.data
    second.finish()
    assert bytes(disk[:len(data)]) == data


def test_a_checkpoint_that_does_not_match_the_manifest_is_refused() -> None:
    payload = build(image(), signer=key("release"))
    reader = reader_for(payload, None, hasher=ResumableSha256)
    reader.feed(payload[: len(payload) // 2])
    good = reader.checkpoint()
    bad = P.Checkpoint(good.offset + 1, good.next_operation, good.metadata,
                       good.payload_hash_state, good.signed_hash_state)
    expect(ErrorCode.DOWNLOAD_STATE_INITIALIZATION_ERROR, "does not match",
           lambda: reader_for(payload, None).resume(bad, ResumableSha256.restore))


def test_resumable_sha256_matches_hashlib_across_save_and_restore() -> None:
    data = os.urandom(100_003)
    hasher = ResumableSha256()
    hasher.update(data[:70_001])
    restored = ResumableSha256.restore(hasher.export())
    restored.update(data[70_001:])
    assert restored.digest() == hashlib.sha256(data).digest()
    assert restored.digest() == restored.digest()  # digest does not end the hash
    with pytest.raises(ValueError, match="112 bytes"):
        ResumableSha256.restore(b"short")
