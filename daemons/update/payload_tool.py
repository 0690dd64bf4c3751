"""``flotilla-update-payload``: cut a signed ``CrAU`` release from a USR image, and check one.

``generate`` reads a USR filesystem image (a file or a block device), cuts it into
whole-block chunks, compresses them on several threads (lzma and bz2 release the GIL),
spools the blobs beside the output, lays out the manifest with :mod:`payload_gen`, signs
the SHA-256 of everything before the signature with an RSA-2048 key (PKCS#1 v1.5, as
update_engine's ``PadRSA2048SHA256Hash`` expects) and renames the finished file into
place; an interrupted or failed run leaves nothing at ``--output``.

``verify`` streams a payload through the very reader and hasher the engine uses
(:class:`payload.PayloadReader` with :class:`resumable_sha256.ResumableSha256`), checks
every operation's hash, the signature with the given public key and the rebuilt
partition against the manifest's ``new_partition_info``, and prints what an Omaha server
needs. ``info`` prints the same facts without a key (nothing is verified).

The Omaha facts: ``size``; ``sha256``, the postinstall action's attribute, base64 of the
payload's SHA-256 (update_engine refuses a payload whose hash differs, error 10); and
the package ``hash``, base64 of its SHA-1 (go-omaha's ``Package.Hash``, which update_engine
ignores but Omaha servers fill in). A ``CrAU`` payload has no field for the release
version, as upstream's has none: ``--version`` goes into the printed facts and the
``--facts`` file only.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from . import manifest as M
from .codes import describe_error
from .payload import (
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    MAX_MANIFEST_BYTES,
    MAX_OPERATION_BYTES,
    PayloadError,
    PayloadReader,
    check_written_partition,
)
from .payload_gen import COMPRESSIONS, PayloadBuilder, compress_chunk, signatures_blob
from .payload_gen import signature_blob_size as _signature_blob_size
from .resumable_sha256 import ResumableSha256

PROG = "flotilla-update-payload"
#: update_engine verifies RSA-2048 signatures only (PadRSA2048SHA256Hash).
KEY_BITS = 2048
READ_SIZE = 1 << 20
#: InstallOperation.data_offset is a uint32, so the blobs must start below 4 GiB.
MAX_DATA_OFFSET = (1 << 32) - 1
#: verify rebuilds the partition's hash; past this a manifest is hostile, not a USR image.
MAX_PARTITION_BYTES = 64 << 30


class ToolError(Exception):
    """A failure the operator can fix; the message names the flag or file at fault."""


# ------------------------------------------------------------------ pure parts

@dataclasses.dataclass(frozen=True)
class OmahaFacts:
    """What an Omaha server announces for a payload."""

    size: int
    sha256: bytes
    sha1: bytes
    version: str | None = None

    def fields(self) -> dict[str, str | int]:
        """The facts as flat fields: base64 where Omaha wants base64, hex beside it."""
        out: dict[str, str | int] = {}
        if self.version is not None:
            out["VERSION"] = self.version
        out.update({
            "PAYLOAD_SIZE": self.size,
            "PAYLOAD_SHA256": base64.b64encode(self.sha256).decode("ascii"),
            "PAYLOAD_SHA256_HEX": self.sha256.hex(),
            "PAYLOAD_SHA1": base64.b64encode(self.sha1).decode("ascii"),
        })
        return out


def manifest_fields(manifest: M.Message, manifest_size: int) -> dict[str, str | int]:
    """The manifest's facts as flat fields (operation counts by type, partition, signature)."""
    kinds = collections.Counter(M.OPERATION_NAMES.get(op.type, str(op.type))
                                for op in manifest.partition_operations)
    out: dict[str, str | int] = {
        "FORMAT_VERSION": FORMAT_VERSION,
        "MANIFEST_SIZE": manifest_size,
        "BLOCK_SIZE": manifest.block_size,
        "OPERATIONS": len(manifest.partition_operations),
    }
    for name in sorted(kinds):
        out[f"OPERATIONS_{name}"] = kinds[name]
    out["DATA_SIZE"] = sum(op.data_length for op in manifest.partition_operations)
    out["NEW_PARTITION_SIZE"] = manifest.new_partition_info.size
    out["NEW_PARTITION_SHA256"] = manifest.new_partition_info.hash.hex()
    if manifest.HasField("signatures_offset"):
        out["SIGNATURES_OFFSET"] = manifest.signatures_offset
        out["SIGNATURES_SIZE"] = manifest.signatures_size
    return out


def render(fields: dict[str, str | int], as_json: bool) -> str:
    """``KEY=value`` lines a shell can source (values quoted when needed), or JSON."""
    if as_json:
        return json.dumps(fields, indent=2, sort_keys=False) + "\n"
    lines = []
    for key, value in fields.items():
        text = str(value)
        if text == "" or any(c.isspace() or c in "'\"$`\\;&|<>()*?#~" for c in text):
            text = "'" + text.replace("'", "'\\''") + "'"
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def partition_size_for(manifest: M.Message) -> int:
    """The smallest partition the manifest's operations and new image fit in."""
    end = 0
    for op in manifest.partition_operations:
        for extent in op.dst_extents:
            end = max(end, (extent.start_block + extent.num_blocks) * manifest.block_size)
    return max(end, manifest.new_partition_info.size)


def load_private_key(pem: bytes, passphrase: bytes | None, source: str) -> rsa.RSAPrivateKey:
    """An RSA-2048 private key from PEM; errors say which flag's file is wrong and how."""
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as err:
        if passphrase is None:
            raise ToolError(f"{source} is encrypted; give its passphrase with "
                            "--passphrase-file") from err
        raise ToolError(f"{source} is not encrypted; drop --passphrase-file") from err
    except ValueError as err:
        if passphrase is not None and b"ENCRYPTED" in pem:
            raise ToolError(f"{source}: wrong passphrase (--passphrase-file)") from err
        raise ToolError(f"{source} is not a PEM private key: {err}") from err
    return _check_rsa(key, source)


def load_public_key(pem: bytes, source: str) -> rsa.RSAPublicKey:
    """An RSA-2048 public key from PEM (update-payload-key.pub.pem's format)."""
    if b"PRIVATE KEY" in pem:
        raise ToolError(f"{source} holds a private key; give the public half "
                        "(openssl rsa -pubout, or this tool's keygen --public-key)")
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as err:
        raise ToolError(f"{source} is not a PEM public key: {err}") from err
    return _check_rsa(key, source)


def _check_rsa(key: object, source: str):  # type: ignore[no-untyped-def]
    if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        raise ToolError(f"{source} is a {type(key).__name__.lstrip('_')}, "
                        "but payloads are signed with RSA")
    if key.key_size != KEY_BITS:
        raise ToolError(f"{source} is a {key.key_size}-bit RSA key; update_engine "
                        f"verifies {KEY_BITS}-bit signatures only")
    return key


def sign_digest(key: rsa.RSAPrivateKey, digest: bytes) -> bytes:
    """The PKCS#1 v1.5 signature of a SHA-256 digest, as ``openssl rsautl`` makes it."""
    return key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def parse_sha256(text: str) -> bytes:
    """A SHA-256 given as Omaha's base64 or as 64 hex digits."""
    if len(text) == 64:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ToolError(f"--sha256 {text!r} is neither base64 nor hex of 32 bytes")
    return raw


# ------------------------------------------------------------------ files

def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: Path, flag: str = "--output", mode: int | None = None
                  ) -> Iterator[BinaryIO]:
    """A temp file beside ``path``, fsynced and renamed onto it only if the block succeeds.

    Anything that goes wrong, a full disk or an interrupt included, removes the temp file
    and leaves whatever was at ``path`` as it was. ``mode`` defaults to 0666 less umask.
    """
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ToolError(f"{flag} {path}: directory {directory} does not exist")
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise ToolError(f"{flag} {path}: {err.strerror or err}") from err
    try:
        os.fchmod(fd, (0o666 & ~_umask()) if mode is None else mode)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise ToolError(f"{flag} {path}: {err.strerror or err}") from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_file(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ToolError(f"{flag} {path}: {err.strerror or err}") from err


def _open(path: Path, flag: str) -> BinaryIO:
    try:
        handle = path.open("rb")
    except OSError as err:
        raise ToolError(f"{flag} {path}: {err.strerror or err}") from err
    return handle


def _size(handle: BinaryIO) -> int:
    """Size of a regular file or a block device (seek to its end)."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    return size


def _chunks(image: BinaryIO, size: int, chunk: int, block: int) -> Iterator[tuple[bytes, bytes]]:
    """The first ``size`` bytes in ``chunk``-byte pieces: each as read and block-padded."""
    left = size
    while left:
        try:
            piece = image.read(min(chunk, left))
        except OSError as err:
            raise ToolError(f"--image: {err.strerror or err}") from err
        if not piece:
            break
        left -= len(piece)
        yield piece, piece + b"\0" * (-len(piece) % block)
    if left:
        raise ToolError(f"--image ended {left} bytes short of its {size} bytes")


@contextlib.contextmanager
def _spool(directory: Path, output: Path) -> Iterator[BinaryIO]:
    """An unnamed temp file beside the output; its write errors name ``--output``."""
    try:
        with tempfile.TemporaryFile(dir=directory) as spool:
            yield spool
    except OSError as err:
        raise ToolError(f"--output {output}: {err.strerror or err}") from err


def generate(image_path: Path, key: rsa.RSAPrivateKey, output: Path, *,
             version: str | None = None, compression: str = "xz", chunk_size: int = 1 << 20,
             block_size: int = 4096, jobs: int = 1) -> OmahaFacts:
    """Build, sign and atomically write the payload for ``image_path``; return its facts."""
    if chunk_size % block_size or not 0 < chunk_size <= MAX_OPERATION_BYTES:
        raise ToolError(f"--chunk-size must be a multiple of {block_size} up to "
                        f"{MAX_OPERATION_BYTES}")
    directory = output.parent if str(output.parent) else Path(".")
    if not directory.is_dir():
        raise ToolError(f"--output {output}: directory {directory} does not exist")
    builder = PayloadBuilder(block_size=block_size, compression=compression)
    image_hash = hashlib.sha256()
    with _open(image_path, "--image") as image:
        image_size = _size(image)
        if image_size == 0:
            raise ToolError(f"--image {image_path} is empty")
        with _spool(directory, output) as spool:
            # The manifest precedes the blobs, so they wait in an unnamed spool file.
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                pending: collections.deque[tuple[int, Future[tuple[int, bytes]]]] = (
                    collections.deque())

                def drain(limit: int) -> None:
                    while len(pending) > limit:
                        raw_length, future = pending.popleft()
                        kind, blob = future.result()
                        if builder.data_size + len(blob) > MAX_DATA_OFFSET:
                            raise ToolError(f"--image {image_path}: the payload data passes "
                                            "4 GiB, past what a manifest can address")
                        builder.add_compressed(kind, blob, raw_length)
                        spool.write(blob)

                for piece, padded in _chunks(image, image_size, chunk_size, block_size):
                    image_hash.update(piece)
                    pending.append((len(padded), pool.submit(compress_chunk, padded,
                                                             compression)))
                    drain(2 * max(1, jobs))
                drain(0)
            signature_size = _signature_blob_size(key.key_size // 8)
            metadata = builder.metadata(image_size, image_hash.digest(), signature_size)
            with atomic_output(output) as out:
                signed, sha1 = hashlib.sha256(metadata), hashlib.sha1(metadata)
                out.write(metadata)
                spool.seek(0)
                while block := spool.read(READ_SIZE):
                    signed.update(block)
                    sha1.update(block)
                    out.write(block)
                blob = signatures_blob(sign_digest(key, signed.digest()))
                if len(blob) != signature_size:
                    raise ToolError(f"signature blob is {len(blob)} bytes, the manifest "
                                    f"reserved {signature_size}")
                whole = signed.copy()
                whole.update(blob)
                sha1.update(blob)
                out.write(blob)
                size = out.tell()
    return OmahaFacts(size=size, sha256=whole.digest(), sha1=sha1.digest(), version=version)


def read_metadata(handle: BinaryIO, source: str) -> tuple[M.Message, int]:
    """The manifest at the start of a payload and its size, checked as the reader checks."""
    header = handle.read(HEADER.size)
    if len(header) < HEADER.size:
        raise ToolError(f"{source} is too short for a payload header")
    magic, version, manifest_size = HEADER.unpack(header)
    if magic != MAGIC:
        raise ToolError(f"{source} starts with {magic!r}, not {MAGIC!r}: not a payload")
    if version != FORMAT_VERSION:
        raise ToolError(f"{source} has payload format version {version}, "
                        f"not {FORMAT_VERSION}")
    if manifest_size > MAX_MANIFEST_BYTES:
        raise ToolError(f"{source} declares a {manifest_size}-byte manifest")
    raw = handle.read(manifest_size)
    try:
        return M.decode(M.DeltaArchiveManifest, raw), manifest_size
    except ValueError as err:
        raise ToolError(f"{source}: {err}") from err


class _PartitionHash:
    """SHA-256 of the rebuilt partition's first ``size`` bytes, from the reader's writes.

    Writes arriving in block order are hashed as they come; any other order spills
    into a sparse temp file that is hashed at the end.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._hash = hashlib.sha256()
        self._next = 0
        self._spill: BinaryIO | None = None

    def write(self, offset: int, data: bytes) -> None:
        if self._spill is None and offset == self._next:
            self._hash.update(memoryview(data)[:max(0, self.size - offset)])
            self._next += len(data)
            return
        if self._spill is None:
            self._spill = tempfile.TemporaryFile()  # noqa: SIM115 (closed by digest)
            self._hash = hashlib.sha256()  # rebuilt from the spill file at the end
        os.pwrite(self._spill.fileno(), data, offset)

    def digest(self) -> bytes:
        if self._spill is None:
            return self._hash.digest()
        with self._spill:
            self._spill.truncate(max(self.size, self._spill.seek(0, os.SEEK_END)))
            self._spill.seek(0)
            left = self.size
            while left and (block := self._spill.read(min(READ_SIZE, left))):
                self._hash.update(block)
                left -= len(block)
        return self._hash.digest()


def verify(path: Path, key: rsa.RSAPublicKey, *, expected_sha256: bytes | None = None,
           expected_size: int | None = None) -> tuple[M.Message, int, OmahaFacts]:
    """Stream the payload through the engine's reader; raise PayloadError if it fails."""
    with _open(path, "PAYLOAD") as handle:
        size = _size(handle)
        manifest, manifest_size = read_metadata(handle, str(path))
        handle.seek(0)
        if partition_size_for(manifest) > MAX_PARTITION_BYTES:
            raise ToolError(f"{path}: the manifest names a partition of "
                            f"{partition_size_for(manifest)} bytes; no USR slot is that large")
        reader = PayloadReader(
            expected_size=size if expected_size is None else expected_size,
            expected_sha256=expected_sha256 or b"",
            partition_size=partition_size_for(manifest),
            public_key=key, hasher=ResumableSha256)
        sha256, sha1 = hashlib.sha256(), hashlib.sha1()
        partition = _PartitionHash(manifest.new_partition_info.size)
        while chunk := handle.read(READ_SIZE):
            sha256.update(chunk)
            sha1.update(chunk)
            for write in reader.feed(chunk):
                partition.write(write.offset, write.data)
    if expected_sha256 is None:
        reader.expected_sha256 = sha256.digest()  # nothing announced: the file's own
    verified = reader.finish()
    check_written_partition(verified, partition.digest())
    return verified, manifest_size, OmahaFacts(size=size, sha256=sha256.digest(),
                                               sha1=sha1.digest())


def info(path: Path) -> tuple[M.Message, int, OmahaFacts]:
    """The manifest and Omaha facts of a payload, verifying nothing."""
    with _open(path, "PAYLOAD") as handle:
        manifest, manifest_size = read_metadata(handle, str(path))
        handle.seek(0)
        sha256, sha1, size = hashlib.sha256(), hashlib.sha1(), 0
        while chunk := handle.read(READ_SIZE):
            sha256.update(chunk)
            sha1.update(chunk)
            size += len(chunk)
    return manifest, manifest_size, OmahaFacts(size=size, sha256=sha256.digest(),
                                               sha1=sha1.digest())


def keygen(private_path: Path, public_path: Path | None) -> None:
    """A fresh RSA-2048 signing key (mode 0600) and, if asked, its public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    if private_path.exists():
        raise ToolError(f"--private-key {private_path} exists; keygen never overwrites a key")
    with atomic_output(private_path, "--private-key", 0o600) as out:
        out.write(private)
    if public_path is not None:
        with atomic_output(public_path, "--public-key", 0o644) as out:
            out.write(public)


# ------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    """The command line: generate, verify, info, keygen."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="build and sign a payload from a USR image")
    gen.add_argument("--image", required=True, type=Path,
                     help="USR filesystem image (file or block device)")
    gen.add_argument("--private-key", required=True, type=Path, help="RSA-2048 PEM key")
    gen.add_argument("--passphrase-file", type=Path, help="passphrase of an encrypted key")
    gen.add_argument("--output", required=True, type=Path, help="payload file to write")
    gen.add_argument("--version", help="release version, for the Omaha facts")
    gen.add_argument("--compression", choices=COMPRESSIONS, default="xz",
                     help="per-operation compression (default xz; kept only where smaller)")
    gen.add_argument("--chunk-size", type=int, default=1 << 20,
                     help="bytes of image per operation (default 1 MiB)")
    gen.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                     help="compression threads (default: one per CPU)")
    gen.add_argument("--facts", type=Path, help="also write the Omaha facts as JSON here")
    gen.add_argument("--json", action="store_true", help="print JSON instead of KEY=value")

    ver = commands.add_parser("verify", help="check a payload as the update engine would")
    ver.add_argument("payload", type=Path, metavar="PAYLOAD")
    ver.add_argument("--public-key", required=True, type=Path,
                     help="PEM public key (update-payload-key.pub.pem)")
    ver.add_argument("--sha256", help="the SHA-256 the Omaha server announces (base64 or hex)")
    ver.add_argument("--size", type=int, help="the size the Omaha server announces")
    ver.add_argument("--json", action="store_true", help="print JSON instead of KEY=value")

    inf = commands.add_parser("info", help="print a payload's manifest and Omaha facts")
    inf.add_argument("payload", type=Path, metavar="PAYLOAD")
    inf.add_argument("--json", action="store_true", help="print JSON instead of KEY=value")

    key = commands.add_parser("keygen", help="make an RSA-2048 signing key")
    key.add_argument("--private-key", required=True, type=Path, help="PEM file to create")
    key.add_argument("--public-key", type=Path, help="also write the public half here")
    return parser


def _run(args: argparse.Namespace) -> str:
    if args.command == "keygen":
        keygen(args.private_key, args.public_key)
        return ""
    if args.command == "generate":
        if args.jobs < 1:
            raise ToolError("--jobs must be at least 1")
        passphrase = None
        if args.passphrase_file is not None:
            passphrase = _read_file(args.passphrase_file, "--passphrase-file").rstrip(b"\r\n")
        key = load_private_key(_read_file(args.private_key, "--private-key"), passphrase,
                               f"--private-key {args.private_key}")
        facts = generate(args.image, key, args.output, version=args.version,
                         compression=args.compression, chunk_size=args.chunk_size,
                         jobs=args.jobs)
        fields = {"OUTPUT": str(args.output), **facts.fields()}
        if args.facts is not None:
            with atomic_output(args.facts, "--facts") as out:
                out.write(json.dumps(facts.fields(), indent=2).encode() + b"\n")
        return render(fields, args.json)
    if args.command == "verify":
        public = load_public_key(_read_file(args.public_key, "--public-key"),
                                 f"--public-key {args.public_key}")
        expected = parse_sha256(args.sha256) if args.sha256 is not None else None
        manifest, manifest_size, facts = verify(args.payload, public,
                                                expected_sha256=expected,
                                                expected_size=args.size)
        fields = {**facts.fields(), **manifest_fields(manifest, manifest_size),
                  "SIGNATURE": "verified"}
        return render(fields, args.json)
    manifest, manifest_size, facts = info(args.payload)
    fields = {**facts.fields(), **manifest_fields(manifest, manifest_size),
              "SIGNATURE": "not checked"}
    return render(fields, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 on success, 1 when the payload is refused or the work fails, 2 on usage."""
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like an error, so no temp file outlives a stopped run.
    previous = signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    try:
        sys.stdout.write(_run(args))
    except ToolError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except PayloadError as err:
        print(f"{PROG}: payload refused: {err} (error {int(err.code)}, "
              f"{describe_error(int(err.code))})", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
