"""The reader's fast path, which the payload tool's verify and the engine share.

Operations of 256 KiB and more are hashed on a second thread while the payload hash runs
here; blobs are filled in place and REPLACE writes hand the blob out. These check that the
fast path gives the very writes and verdicts of the plain one, in any download chunking.
"""

from __future__ import annotations

import functools
import hashlib
import random
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flotilla.daemons.update import manifest as M
from flotilla.daemons.update import payload as P
from flotilla.daemons.update import payload_tool as T
from flotilla.daemons.update.codes import ErrorCode
from flotilla.daemons.update.payload_gen import PayloadBuilder, signature_blob_size, signatures_blob
from flotilla.daemons.update.resumable_sha256 import ResumableSha256

BLOCK = 4096
MiB = 1 << 20


@functools.cache
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def release(size: int = 3 * MiB + 5000, chunk: int = MiB) -> tuple[bytes, bytes]:
    """An image (raw and compressible parts) and its signed payload with 1 MiB operations."""
    rng = random.Random(7)
    image = rng.randbytes(size // 2) + b"flotilla " * ((size - size // 2) // 9 + 1)
    image = image[:size]
    builder = PayloadBuilder(block_size=BLOCK, compression="xz")
    blobs = []
    for start in range(0, size, chunk):
        piece = image[start:start + chunk]
        blobs.append(builder.add_chunk(piece + b"\0" * (-len(piece) % BLOCK)))
    body = builder.metadata(size, hashlib.sha256(image).digest(), signature_blob_size(256))
    body += b"".join(blobs)
    signed = body + signatures_blob(T.sign_digest(key(), hashlib.sha256(body).digest()))
    return image, signed


def apply(payload: bytes, step: int, *, form: type = bytes,
          partition: int = 4 * MiB) -> tuple[bytearray, P.PayloadReader]:
    reader = P.PayloadReader(expected_size=len(payload),
                             expected_sha256=hashlib.sha256(payload).digest(),
                             partition_size=partition, public_key=key().public_key(),
                             hasher=ResumableSha256)
    disk = bytearray(partition)
    for start in range(0, len(payload), step):
        piece = form(payload[start:start + step])
        for write in reader.feed(piece):
            disk[write.offset:write.offset + len(write.data)] = write.data
    return disk, reader


@pytest.mark.parametrize("serial", [False, True], ids=["second thread", "one thread"])
@pytest.mark.parametrize("step", [1000, 64 * 1024 + 1, MiB, 5 * MiB])
def test_large_operations_apply_the_same_with_either_hashing(
        monkeypatch: pytest.MonkeyPatch, serial: bool, step: int) -> None:
    if serial:
        monkeypatch.setattr(P, "PARALLEL_HASH_BYTES", 1 << 62)
    threads: list[str] = []
    original = P._sha256

    def recording(data: bytearray) -> bytes:
        threads.append(threading.current_thread().name)
        return original(data)

    monkeypatch.setattr(P, "_sha256", recording)
    image, payload = release()
    disk, reader = apply(payload, step)
    manifest = reader.finish()
    assert bytes(disk[:len(image)]) == image
    assert {op.type for op in manifest.partition_operations} == {M.REPLACE, M.REPLACE_XZ}
    large = sum(op.data_length >= 256 << 10 for op in manifest.partition_operations)
    assert len(threads) == len(manifest.partition_operations) and large >= 2
    on_worker = sum(name.startswith("payload-sha256") for name in threads)
    assert on_worker == (0 if serial else large)


@pytest.mark.parametrize("form", [bytearray, memoryview])
def test_the_download_may_hand_over_bytearrays_and_views(form: type) -> None:
    image, payload = release()
    disk, reader = apply(payload, 300_000, form=form)
    reader.finish()
    assert bytes(disk[:len(image)]) == image


@pytest.mark.parametrize("where", ["raw blob", "last byte of a raw blob"])
def test_a_tampered_large_blob_gives_no_write_and_its_operations_code(where: str) -> None:
    _, payload = release()
    _, _, manifest_size = P.HEADER.unpack_from(payload)
    manifest = M.decode(M.DeltaArchiveManifest, payload[20:20 + manifest_size])
    first = manifest.partition_operations[0]
    assert first.type == M.REPLACE and first.data_length >= P.PARALLEL_HASH_BYTES
    at = 20 + manifest_size + (0 if where == "raw blob" else first.data_length - 1)
    bad = bytearray(payload)
    bad[at] ^= 0x80
    reader = P.PayloadReader(expected_size=len(bad), expected_sha256=b"\0" * 32,
                             partition_size=4 * MiB, public_key=None)
    with pytest.raises(P.PayloadError) as caught:
        for start in range(0, len(bad), 4096):
            assert reader.feed(bytes(bad[start:start + 4096])) == []
    assert caught.value.code == ErrorCode.DOWNLOAD_OPERATION_HASH_MISMATCH
    assert "operation 0" in str(caught.value)


def test_a_replace_write_is_the_blob_and_the_reader_lets_it_go() -> None:
    image, payload = release()
    second = P.PayloadReader(expected_size=len(payload),
                             expected_sha256=hashlib.sha256(payload).digest(),
                             partition_size=4 * MiB, public_key=None)
    writes = second.feed(payload)
    raw = [w for w in writes if isinstance(w.data, bytearray)]
    assert raw and bytes(raw[0].data) == image[:MiB]
    raw[0].data[:4] = b"XXXX"  # the caller owns it now: the verdict does not change
    second.finish()


def test_offset_counts_a_half_filled_operation_and_a_checkpoint_does_not() -> None:
    _, payload = release()
    reader = P.PayloadReader(expected_size=len(payload), expected_sha256=b"\0" * 32,
                             partition_size=4 * MiB, public_key=None, hasher=ResumableSha256)
    half = len(payload) // 2
    reader.feed(payload[:half])
    assert reader.offset == half
    checkpoint = reader.checkpoint()
    assert checkpoint.offset < half
    assert checkpoint.payload_hash_state == checkpoint.signed_hash_state
    assert ResumableSha256.restore(checkpoint.payload_hash_state).digest() == (
        hashlib.sha256(payload[:checkpoint.offset]).digest())
    odd = P.Checkpoint(checkpoint.offset, checkpoint.next_operation, checkpoint.metadata,
                       checkpoint.payload_hash_state, b"\x01" * len(checkpoint.signed_hash_state))
    fresh = P.PayloadReader(expected_size=len(payload), expected_sha256=b"\0" * 32,
                            partition_size=4 * MiB, public_key=None)
    with pytest.raises(P.PayloadError) as caught:
        fresh.resume(odd, ResumableSha256.restore)
    assert caught.value.code == ErrorCode.DOWNLOAD_STATE_INITIALIZATION_ERROR
