"""flotilla-update-payload on real files: an ext4 USR image made by mkfs, cut, signed, checked.

The tool runs as a process (``python -m``). What it writes must go through the engine's
own reader (PayloadReader with the resumable hasher) into a partition file that e2fsck
finds clean and debugfs reads the version from; its facts must agree with sha256sum,
sha1sum and openssl, which check the signature independently. Tampering, a wrong key or
announced facts that differ are refused with update_engine's codes, and a run that fails
or is stopped leaves no file behind and an older payload untouched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from flotilla.daemons.update import manifest as M
from flotilla.daemons.update import payload as P
from flotilla.daemons.update.resumable_sha256 import ResumableSha256

from tests.conditions import wait_until

MiB = 1 << 20
VERSION = "4081.2.0"


def tool(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "flotilla.daemons.update.payload_tool",
                             *argv], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv[0]} exited {result.returncode}: {result.stderr}")
    return result


def fields(stdout: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(stdout))


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keys, an ext4 USR image with a version file, and the payload the tool cut from it."""
    for needed in ("mkfs.ext4", "e2fsck", "debugfs", "sha256sum", "sha1sum", "openssl"):
        if shutil.which(needed) is None:
            pytest.fail(f"{needed} is missing: tests/setup.sh installs it")
    work = tmp_path_factory.mktemp("payload")
    tree = work / "tree"
    (tree / "lib").mkdir(parents=True)
    (tree / "version").write_text(f"FLOTILLA_RELEASE_VERSION={VERSION}\n")
    rng = random.Random(12)
    for number in range(40):  # some incompressible, some text: both operation kinds
        body = rng.randbytes(30_000) if number % 2 else (b"usr %d\n" % number) * 4000
        (tree / "lib" / f"file{number}").write_bytes(body)
    image = work / "usr.img"
    run("mkfs.ext4", "-q", "-F", "-d", str(tree), "-L", "USR-B", str(image), "12M")
    key, pub = work / "release.pem", work / "release.pub.pem"
    tool("keygen", "--private-key", str(key), "--public-key", str(pub))
    payload = work / "update.signed"
    out = tool("generate", "--image", str(image), "--private-key", str(key), "--output",
               str(payload), "--version", VERSION, "--facts", str(work / "facts.json"))
    (work / "generate.out").write_text(out.stdout)
    return {"work": work, "image": image, "key": key, "pub": pub, "payload": payload}


def test_keygen_makes_a_private_key_only_root_reads_and_never_overwrites_it(
        release: dict[str, Path]) -> None:
    assert release["key"].stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PUBLIC KEY" in release["pub"].read_bytes()
    before = release["key"].read_bytes()
    again = tool("keygen", "--private-key", str(release["key"]), check=False)
    assert again.returncode == 1 and "never overwrites a key" in again.stderr
    assert release["key"].read_bytes() == before


def test_generate_prints_the_facts_sha256sum_and_sha1sum_agree_with(
        release: dict[str, Path]) -> None:
    payload = release["payload"]
    facts = fields((release["work"] / "generate.out").read_text())
    sha256_hex = run("sha256sum", str(payload)).split()[0]
    sha1_hex = run("sha1sum", str(payload)).split()[0]
    assert facts["OUTPUT"] == str(payload)
    assert facts["VERSION"] == VERSION
    assert int(facts["PAYLOAD_SIZE"]) == payload.stat().st_size
    assert facts["PAYLOAD_SHA256_HEX"] == sha256_hex
    assert base64.b64decode(facts["PAYLOAD_SHA256"]).hex() == sha256_hex
    assert base64.b64decode(facts["PAYLOAD_SHA1"]).hex() == sha1_hex
    written = json.loads((release["work"] / "facts.json").read_text())
    assert written == {k: (int(v) if k == "PAYLOAD_SIZE" else v)
                       for k, v in facts.items() if k != "OUTPUT"}
    assert payload.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert [p.name for p in release["work"].iterdir() if p.name.endswith(".tmp")] == []


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_verify_and_info_print_the_manifest_of_the_image(release: dict[str, Path]) -> None:
    image_size = release["image"].stat().st_size
    verified = fields(tool("verify", "--public-key", str(release["pub"]),
                           str(release["payload"])).stdout)
    assert verified["SIGNATURE"] == "verified"
    assert verified["FORMAT_VERSION"] == "1" and verified["BLOCK_SIZE"] == "4096"
    assert int(verified["NEW_PARTITION_SIZE"]) == image_size
    assert verified["NEW_PARTITION_SHA256"] == run("sha256sum", str(release["image"])).split()[0]
    assert int(verified["OPERATIONS"]) == image_size // MiB
    assert int(verified["OPERATIONS_REPLACE_XZ"]) >= 1
    info = json.loads(tool("info", "--json", str(release["payload"])).stdout)
    assert info["SIGNATURE"] == "not checked"
    assert {k: str(v) for k, v in info.items() if k != "SIGNATURE"} == {
        k: v for k, v in verified.items() if k != "SIGNATURE"}
    facts = fields((release["work"] / "generate.out").read_text())
    announced = tool("verify", "--public-key", str(release["pub"]), "--sha256",
                     facts["PAYLOAD_SHA256"], "--size", facts["PAYLOAD_SIZE"],
                     str(release["payload"]))
    assert fields(announced.stdout)["SIGNATURE"] == "verified"


def test_openssl_verifies_the_signature_over_everything_before_the_signature_blob(
        release: dict[str, Path]) -> None:
    data = release["payload"].read_bytes()
    _, _, manifest_size = P.HEADER.unpack_from(data)
    manifest = M.decode(M.DeltaArchiveManifest, data[P.HEADER.size:P.HEADER.size + manifest_size])
    start = P.HEADER.size + manifest_size + manifest.signatures_offset
    assert start + manifest.signatures_size == len(data)
    signatures = M.decode(M.Signatures, data[start:])
    assert [s.version for s in signatures.signatures] == [P.SIGNATURE_VERSION]
    work = release["work"]
    (work / "signed.bin").write_bytes(data[:start])
    (work / "sig.bin").write_bytes(signatures.signatures[0].data)
    out = run("openssl", "dgst", "-sha256", "-verify", str(release["pub"]), "-signature",
              str(work / "sig.bin"), str(work / "signed.bin"))
    assert out.strip() == "Verified OK"


def test_the_engines_reader_rebuilds_a_filesystem_e2fsck_and_debugfs_accept(
        release: dict[str, Path]) -> None:
    payload = release["payload"].read_bytes()
    facts = fields((release["work"] / "generate.out").read_text())
    partition = release["work"] / "usr-b.part"
    with partition.open("wb") as f:
        f.truncate(32 * MiB)  # the slot is larger than the image, as on a real disk
    reader = P.PayloadReader(expected_size=int(facts["PAYLOAD_SIZE"]),
                             expected_sha256=base64.b64decode(facts["PAYLOAD_SHA256"]),
                             partition_size=32 * MiB,
                             public_key=load_public(release["pub"]), hasher=ResumableSha256)
    fd = os.open(partition, os.O_WRONLY)
    try:
        for start in range(0, len(payload), 64 * 1024 + 3):  # an odd download chunking
            for write in reader.feed(payload[start:start + 64 * 1024 + 3]):
                os.pwrite(fd, write.data, write.offset)
    finally:
        os.close(fd)
    manifest = reader.finish()
    size = manifest.new_partition_info.size
    rebuilt = partition.read_bytes()[:size]
    P.check_written_partition(manifest, hashlib.sha256(rebuilt).digest())
    assert rebuilt == release["image"].read_bytes()
    filesystem = release["work"] / "rebuilt.img"
    filesystem.write_bytes(rebuilt)
    run("e2fsck", "-fn", str(filesystem))
    version = run("debugfs", "-R", "cat /version", str(filesystem))
    assert version == f"FLOTILLA_RELEASE_VERSION={VERSION}\n"


def load_public(path: Path):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization
    return serialization.load_pem_public_key(path.read_bytes())


def refused(release: dict[str, Path], payload: Path, *extra: str,
            pub: Path | None = None) -> str:
    result = tool("verify", "--public-key", str(pub or release["pub"]), *extra, str(payload),
                  check=False)
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert "payload refused" in result.stderr
    return result.stderr


@pytest.mark.parametrize(("where", "code"), [
    ("blob", "error 29, DOWNLOAD_OPERATION_HASH_MISMATCH"),
    ("manifest", "error 18, DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR"),
    ("signature", "error 18, DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR"),
    ("truncated", "error 9, DOWNLOAD_TRANSFER_ERROR"),
    ("appended", "error 11, PAYLOAD_SIZE_MISMATCH"),
])
def test_a_tampered_payload_is_refused_with_update_engines_code(
        release: dict[str, Path], tmp_path: Path, where: str, code: str) -> None:
    data = bytearray(release["payload"].read_bytes())
    _, _, manifest_size = P.HEADER.unpack_from(data)
    metadata_end = P.HEADER.size + manifest_size
    manifest = M.decode(M.DeltaArchiveManifest, bytes(data[P.HEADER.size:metadata_end]))
    if where == "blob":
        data[metadata_end + 100] ^= 0x01
    elif where == "manifest":  # still parses: the partition hash names another image
        at = data.index(manifest.new_partition_info.hash, P.HEADER.size)
        data[at] ^= 0x01
    elif where == "signature":
        data[-10] ^= 0x01
    elif where == "truncated":
        del data[metadata_end + manifest.signatures_offset // 2:]
    else:
        data += b"\0"
    bad = tmp_path / "tampered"
    bad.write_bytes(bytes(data))
    assert code in refused(release, bad)


def test_another_key_and_announced_facts_that_differ_are_refused(
        release: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other_pub = tmp_path / "other.pub.pem"
    tool("keygen", "--private-key", str(other), "--public-key", str(other_pub))
    stderr = refused(release, release["payload"], pub=other_pub)
    assert "does not verify with the payload key" in stderr
    wrong_sha = base64.b64encode(hashlib.sha256(b"another").digest()).decode()
    assert "error 10, PAYLOAD_HASH_MISMATCH" in refused(release, release["payload"],
                                                        "--sha256", wrong_sha)
    size = release["payload"].stat().st_size
    assert "error 11, PAYLOAD_SIZE_MISMATCH" in refused(release, release["payload"],
                                                        "--size", str(size - 1))


@pytest.mark.parametrize("size", [3 * MiB, 640 << 10], ids=["spooling", "writing"])
def test_a_run_that_fails_on_a_full_disk_leaves_the_old_payload_and_no_temp_file(
        release: dict[str, Path], tmp_path: Path, size: int) -> None:
    # 3 MiB fills the 1 MiB disk while the blobs spool; 640 KiB spools, then the payload's
    # temp file (written beside the spool) runs out of room.
    image = tmp_path / "big.img"
    image.write_bytes(random.Random(4).randbytes(size))  # incompressible
    small = tmp_path / "small"
    small.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m", "flotilla-payload-test", str(small))
    try:
        old = small / "update.signed"
        old.write_bytes(b"the previous release")
        result = tool("generate", "--image", str(image), "--private-key", str(release["key"]),
                      "--output", str(old), "--compression", "none", check=False)
        assert result.returncode == 1
        assert f"--output {old}: No space left on device" in result.stderr
        assert [p.name for p in small.iterdir()] == ["update.signed"]
        assert old.read_bytes() == b"the previous release"
    finally:
        run("umount", str(small))


def test_a_stopped_run_leaves_the_old_payload_and_no_temp_file(
        release: dict[str, Path], tmp_path: Path) -> None:
    image = tmp_path / "big.img"
    image.write_bytes(random.Random(5).randbytes(48 * MiB))  # slow to xz: still spooling
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    old = out_dir / "update.signed"
    old.write_bytes(b"the previous release")
    process = subprocess.Popen(
        [sys.executable, "-m", "flotilla.daemons.update.payload_tool", "generate", "--image",
         str(image), "--private-key", str(release["key"]), "--output", str(old), "--jobs", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def spooling() -> bool:  # its unnamed spool file is open in the output directory
            links = []
            for fd in os.listdir(f"/proc/{process.pid}/fd"):
                try:
                    links.append(os.readlink(f"/proc/{process.pid}/fd/{fd}"))
                except FileNotFoundError:
                    continue
            return any(link.startswith(str(out_dir)) for link in links)
        wait_until(spooling, 30, "the generate run to open its spool file",
                   tolerate=(FileNotFoundError,))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert [p.name for p in out_dir.iterdir()] == ["update.signed"]
    assert old.read_bytes() == b"the previous release"
