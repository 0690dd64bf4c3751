"""The payload tool's pure parts: key checks, Omaha facts, output, partition hashing, CLI."""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import shlex

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flotilla.daemons.update import manifest as M
from flotilla.daemons.update import payload_tool as T
from flotilla.daemons.update.payload_gen import PayloadBuilder, compress_chunk

BLOCK = 4096


@functools.cache
def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pem(key: object, password: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                             serialization.PrivateFormat.PKCS8, encryption)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


# ------------------------------------------------------------------ keys

def test_an_rsa_2048_key_loads_plain_and_with_its_passphrase() -> None:
    key = rsa_key()
    plain = T.load_private_key(pem(key), None, "--private-key k.pem")
    locked = T.load_private_key(pem(key, b"secret"), b"secret", "--private-key k.pem")
    assert plain.private_numbers() == locked.private_numbers() == key.private_numbers()
    public = T.load_public_key(public_pem(key), "--public-key k.pub")
    assert public.public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize(("data", "passphrase", "words"), [
    (b"not a key at all", None, "is not a PEM private key"),
    ("encrypted", None, "is encrypted; give its passphrase with --passphrase-file"),
    ("encrypted", b"wrong", "wrong passphrase (--passphrase-file)"),
    ("plain", b"secret", "is not encrypted; drop --passphrase-file"),
    ("ec", None, "but payloads are signed with RSA"),
    ("rsa1024", None, "1024-bit RSA key; update_engine verifies 2048-bit signatures only"),
])
def test_a_private_key_that_cannot_sign_names_the_flag_and_the_fix(
        data: bytes | str, passphrase: bytes | None, words: str) -> None:
    material = {
        "encrypted": lambda: pem(rsa_key(), b"secret"),
        "plain": lambda: pem(rsa_key()),
        "ec": lambda: pem(ec.generate_private_key(ec.SECP256R1())),
        "rsa1024": lambda: pem(rsa_key(1024)),
    }
    raw = material[data]() if isinstance(data, str) else data
    with pytest.raises(T.ToolError) as caught:
        T.load_private_key(raw, passphrase, "--private-key k.pem")
    assert str(caught.value).startswith("--private-key k.pem")
    assert words in str(caught.value)


def test_a_public_key_flag_refuses_a_private_key_and_garbage() -> None:
    with pytest.raises(T.ToolError, match=r"--public-key k holds a private key; give the public"):
        T.load_public_key(pem(rsa_key()), "--public-key k")
    with pytest.raises(T.ToolError, match=r"--public-key k is not a PEM public key"):
        T.load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                          "--public-key k")
    small = rsa_key(1024).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(T.ToolError, match=r"1024-bit RSA key"):
        T.load_public_key(small, "--public-key k")


def test_signing_a_digest_is_deterministic_pkcs1_v15_that_verifies() -> None:
    digest = hashlib.sha256(b"payload").digest()
    first = T.sign_digest(rsa_key(), digest)
    assert first == T.sign_digest(rsa_key(), digest)  # PKCS#1 v1.5 has no salt
    assert len(first) == 256
    # Raw RSA recovers the padded block update_engine's PadRSA2048SHA256Hash builds.
    numbers = rsa_key().public_key().public_numbers()
    block = pow(int.from_bytes(first, "big"), numbers.e, numbers.n).to_bytes(256, "big")
    prefix = bytes.fromhex("3031300d060960864801650304020105000420")
    assert block == b"\x00\x01" + b"\xff" * (256 - 3 - 19 - 32) + b"\x00" + prefix + digest


# ------------------------------------------------------------------ Omaha facts and output

def test_omaha_facts_are_base64_for_omaha_with_hex_beside() -> None:
    data = b"a payload"
    facts = T.OmahaFacts(size=len(data), sha256=hashlib.sha256(data).digest(),
                         sha1=hashlib.sha1(data).digest(), version="3815.2.0")
    fields = facts.fields()
    assert list(fields) == ["VERSION", "PAYLOAD_SIZE", "PAYLOAD_SHA256", "PAYLOAD_SHA256_HEX",
                            "PAYLOAD_SHA1"]
    assert base64.b64decode(fields["PAYLOAD_SHA256"]) == hashlib.sha256(data).digest()
    assert fields["PAYLOAD_SHA256_HEX"] == hashlib.sha256(data).hexdigest()
    assert base64.b64decode(fields["PAYLOAD_SHA1"]) == hashlib.sha1(data).digest()
    assert "VERSION" not in T.OmahaFacts(1, b"\0" * 32, b"\0" * 20).fields()


def test_rendered_fields_read_back_through_a_shell_lexer() -> None:
    fields = {"A": 1, "B": "plain+/=", "C": "two words", "D": "it's $HOME", "E": ""}
    text = T.render(fields, as_json=False)
    assert text.splitlines()[:2] == ["A=1", "B=plain+/="]
    parsed = dict(word.split("=", 1) for word in shlex.split(text))
    assert parsed == {key: str(value) for key, value in fields.items()}


@pytest.mark.parametrize("form", ["hex", "base64"])
def test_an_announced_sha256_is_taken_as_hex_or_base64(form: str) -> None:
    digest = hashlib.sha256(b"x").digest()
    text = digest.hex() if form == "hex" else base64.b64encode(digest).decode()
    assert T.parse_sha256(text) == digest


@pytest.mark.parametrize("text", ["", "zz" * 32, "AAAA", base64.b64encode(b"\0" * 31).decode()])
def test_a_malformed_sha256_names_the_flag(text: str) -> None:
    with pytest.raises(T.ToolError, match=r"^--sha256 .* is neither base64 nor hex of 32 bytes"):
        T.parse_sha256(text)


# ------------------------------------------------------------------ manifest facts

def built_manifest(chunks: list[bytes]) -> M.Message:
    builder = PayloadBuilder(block_size=BLOCK, compression="xz")
    for chunk in chunks:
        builder.add_chunk(chunk)
    metadata = builder.metadata(sum(map(len, chunks)) - 100, b"\x11" * 32, 264)
    return M.decode(M.DeltaArchiveManifest, metadata[20:])


def test_manifest_fields_count_operations_by_type_and_name_the_partition() -> None:
    noise = random.Random(3).randbytes(2 * BLOCK)
    manifest = built_manifest([b"\0" * BLOCK, noise, b"\0" * 3 * BLOCK])
    fields = T.manifest_fields(manifest, 321)
    assert fields["OPERATIONS"] == 3
    assert fields["OPERATIONS_REPLACE"] == 1 and fields["OPERATIONS_REPLACE_XZ"] == 2
    assert fields["MANIFEST_SIZE"] == 321 and fields["BLOCK_SIZE"] == BLOCK
    assert fields["NEW_PARTITION_SIZE"] == 6 * BLOCK - 100
    assert fields["NEW_PARTITION_SHA256"] == "11" * 32
    assert fields["SIGNATURES_OFFSET"] == fields["DATA_SIZE"]
    assert fields["SIGNATURES_SIZE"] == 264
    assert T.partition_size_for(manifest) == 6 * BLOCK


def test_parallel_compression_builds_the_same_manifest_as_add_chunk() -> None:
    rng = random.Random(5)
    chunks = [b"usr " * 2048, rng.randbytes(BLOCK), b"\0" * 2 * BLOCK]
    serial, parallel = PayloadBuilder(), PayloadBuilder()
    blobs = [serial.add_chunk(chunk) for chunk in chunks]
    for chunk, blob in zip(chunks, blobs, strict=True):
        kind, packed = compress_chunk(chunk, "xz")
        assert packed == blob
        parallel.add_compressed(kind, packed, len(chunk))
    assert parallel.metadata(9, b"\0" * 32, None) == serial.metadata(9, b"\0" * 32, None)
    assert parallel.blocks == 5 and parallel.data_size == sum(map(len, blobs))
    with pytest.raises(ValueError, match="not a full-payload REPLACE"):
        parallel.add_compressed(M.BSDIFF, b"x", BLOCK)
    with pytest.raises(ValueError, match="whole 4096-byte blocks"):
        parallel.add_compressed(M.REPLACE, b"x", 100)


# ------------------------------------------------------------------ partition hash

@pytest.mark.parametrize("order", ["in order", "shuffled"])
def test_the_rebuilt_partition_hash_covers_the_image_size_in_any_write_order(order: str) -> None:
    image = random.Random(9).randbytes(5 * BLOCK - 77)
    padded = image + b"\0" * 77
    writes = [(start, padded[start:start + BLOCK]) for start in range(0, len(padded), BLOCK)]
    if order == "shuffled":
        random.Random(1).shuffle(writes)
    partition = T._PartitionHash(len(image))
    for offset, data in writes:
        partition.write(offset, data)
    assert partition.digest() == hashlib.sha256(image).digest()


# ------------------------------------------------------------------ command line

@pytest.mark.parametrize(("argv", "flag"), [
    (["generate", "--private-key", "k", "--output", "o"], "--image"),
    (["generate", "--image", "i", "--output", "o"], "--private-key"),
    (["generate", "--image", "i", "--private-key", "k"], "--output"),
    (["verify", "payload"], "--public-key"),
    (["keygen"], "--private-key"),
])
def test_a_missing_flag_is_a_usage_error_naming_it(
        argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        T.main(argv)
    assert caught.value.code == 2
    assert flag in capsys.readouterr().err


def test_generate_refuses_a_missing_output_directory_before_reading_anything(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(pem(rsa_key()))
    image = tmp_path / "usr.img"
    image.write_bytes(b"\0" * BLOCK)
    out = tmp_path / "missing" / "p.bin"
    code = T.main(["generate", "--image", str(image), "--private-key", str(key),
                   "--output", str(out)])
    assert code == 1
    assert f"--output {out}: directory {out.parent} does not exist" in capsys.readouterr().err
    code = T.main(["generate", "--image", str(tmp_path / "nope"), "--private-key", str(key),
                   "--output", str(tmp_path / "p.bin")])
    assert code == 1
    assert "--image" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem", "usr.img"]


def test_verify_refuses_a_manifest_naming_a_partition_no_slot_has(tmp_path) -> None:
    builder = PayloadBuilder(block_size=BLOCK, compression="none")
    blob = builder.add_chunk(b"\0" * BLOCK)
    path = tmp_path / "hostile"
    path.write_bytes(builder.metadata(1 << 40, b"\0" * 32, None) + blob)
    with pytest.raises(T.ToolError, match=r"names a partition of 1099511627776 bytes"):
        T.verify(path, rsa_key().public_key())
