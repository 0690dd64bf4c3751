"""Payload download-and-verify: the engine's streaming path against sha256sum + dd.

Usage: ``.venv/bin/python bench/update/run.py [--mib 1024] [--rounds 3] [--chunk BYTES]
[--profile PY-SPY]``

A random (incompressible) USR image of ``--mib`` MiB is cut into a signed payload with
flotilla-update-payload (``--compression none``, so every operation is a REPLACE and the
figure is the verify-and-write path, not xz). Each round, alternating, measures:

- the anchor: ``sha256sum PAYLOAD`` then ``dd if=PAYLOAD of=FILE bs=1M``, the two jobs
  every download-and-verify must do at least (hash the bytes once, write them once);
- ours: ``stream.py`` in a fresh process, feeding the payload through PayloadReader with
  the resumable SHA-256 into a file as the engine writes a slot (per-operation hashes,
  whole-payload hash, RSA signature, checkpoints every 8 MiB), then reading the slot back
  and hashing it against the manifest, as the engine does before flipping it; and once
  more with each operation's hash on the same thread as the payload hash (``--serial-hash``),
  to show what the second hashing thread buys.

The payload stays in the page cache and nothing is fsynced, so the disk is out of both
figures. Debian's sha256sum does not use the CPU's SHA instructions, so a strict anchor
is printed beside it: ``openssl dgst -sha256`` (the same libcrypto ours hashes with) + dd.
Printed: the medians, ours as a ratio of the anchor's throughput (goal at least 0.8
for the streaming part), the read-back on top, and our peak resident memory (goal under
64 MiB). With ``--profile`` one more run of ours is sampled with py-spy and the
functions where the samples land are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
TOOL = [sys.executable, "-m", "flotilla.daemons.update.payload_tool"]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def make_image(path: Path, mib: int) -> None:
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(MiB))


def ours(work: Path, payload: Path, pub: Path, sha256: str, chunk: int,
         serial: bool = False) -> dict[str, float]:
    target = work / "slot"
    target.unlink(missing_ok=True)
    out = subprocess.run([sys.executable, str(HERE / "stream.py"), str(payload), str(target),
                          str(pub), sha256, "--chunk", str(chunk),
                          *(["--serial-hash"] if serial else [])],
                         check=True, capture_output=True, text=True).stdout
    target.unlink()
    return json.loads(out)


def anchor(work: Path, payload: Path) -> tuple[float, float, float]:
    """sha256sum, dd, and openssl's SHA-256 (the strict anchor's hash) of the payload."""
    target = work / "copy"
    target.unlink(missing_ok=True)
    hashing = timed(["sha256sum", str(payload)])
    copying = timed(["dd", f"if={payload}", f"of={target}", "bs=1M"])
    target.unlink()
    fastest = timed(["openssl", "dgst", "-sha256", str(payload)])
    return hashing, copying, fastest


def profile(py_spy: str, work: Path, payload: Path, pub: Path, sha256: str,
            chunk: int) -> None:
    raw = work / "profile.txt"
    target = work / "slot"
    subprocess.run([py_spy, "record", "--format", "raw", "--rate", "250", "--native",
                    "-o", str(raw), "--", sys.executable, str(HERE / "stream.py"),
                    str(payload), str(target), str(pub), sha256, "--chunk", str(chunk)],
                   check=True, capture_output=True)
    target.unlink(missing_ok=True)
    by_library: dict[str, int] = {}
    by_function: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, weight = stack.split(";"), int(count)
        samples += weight
        leaf = frames[-1]
        library = leaf[leaf.rfind("(") + 1:-1] if ".so" in leaf else "python"
        by_library[library.split(":")[0]] = by_library.get(library.split(":")[0], 0) + weight
        python = [f for f in frames if ".py:" in f]  # innermost Python caller of the leaf
        name = python[-1].rsplit(":", 1)[0] if python else leaf
        by_function[name] = by_function.get(name, 0) + weight
    print(f"py-spy: {samples} samples (all threads)")
    for title, table in (("by library", by_library), ("by innermost Python function",
                                                        by_function)):
        print(f"  {title}:")
        for label, count in sorted(table.items(), key=lambda item: -item[1])[:10]:
            print(f"    {100 * count / samples:5.1f}%  {label}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="payload size in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=MiB, help="download piece size")
    parser.add_argument("--profile", metavar="PY-SPY", help="py-spy binary to sample with")
    args = parser.parse_args()
    for needed in ("sha256sum", "dd", "openssl"):
        if shutil.which(needed) is None:
            print(f"{needed} is missing; nothing to compare against")
            return 1
    work = Path(tempfile.mkdtemp(prefix="flotilla-update-bench-"))
    try:
        image, payload = work / "usr.img", work / "update.signed"
        key, pub = work / "key.pem", work / "key.pub.pem"
        make_image(image, args.mib)
        subprocess.run([*TOOL, "keygen", "--private-key", str(key), "--public-key", str(pub)],
                       check=True)
        generate = timed([*TOOL, "generate", "--image", str(image), "--private-key", str(key),
                          "--output", str(payload), "--compression", "none"])
        image.unlink()
        facts = json.loads(subprocess.run([*TOOL, "info", "--json", str(payload)], check=True,
                                          capture_output=True, text=True).stdout)
        sha256 = facts["PAYLOAD_SHA256_HEX"]
        size = payload.stat().st_size
        subprocess.run(["cat", str(payload)], check=True, stdout=subprocess.DEVNULL)  # warm
        anchors, runs, serial = [], [], []
        for _ in range(args.rounds):
            anchors.append(anchor(work, payload))
            runs.append(ours(work, payload, pub, sha256, args.chunk))
            serial.append(ours(work, payload, pub, sha256, args.chunk, serial=True))
        if args.profile:
            profile(args.profile, work, payload, pub, sha256, args.chunk)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mib = size / MiB
    hashing = statistics.median(a[0] for a in anchors)
    copying = statistics.median(a[1] for a in anchors)
    fastest = statistics.median(a[2] for a in anchors)
    anchor_s = statistics.median(a[0] + a[1] for a in anchors)
    strict_s = statistics.median(a[2] + a[1] for a in anchors)
    stream_s = statistics.median(r["stream_s"] for r in runs)
    total_s = statistics.median(r["stream_s"] + r["read_back_s"] for r in runs)
    serial_s = statistics.median(r["stream_s"] for r in serial)
    peak = max(r["peak_rss_kib"] for r in runs) / 1024
    print(f"payload: {mib:.0f} MiB, {len(runs)} rounds, download pieces of {args.chunk} bytes; "
          f"generate (--compression none) took {generate:.1f} s")
    print(f"anchor sha256sum + dd:        {anchor_s:6.2f} s  {mib / anchor_s:7.0f} MiB/s "
          f"(sha256sum {hashing:.2f} s, dd {copying:.2f} s)")
    print(f"ours stream + verify:         {stream_s:6.2f} s  {mib / stream_s:7.0f} MiB/s  "
          f"ratio {anchor_s / stream_s:.2f} (goal >= 0.8)")
    print(f"ours, operation hashes serial: {serial_s:5.2f} s  {mib / serial_s:7.0f} MiB/s  "
          f"ratio {anchor_s / serial_s:.2f}")
    print(f"ours with slot read-back:     {total_s:6.2f} s  {mib / total_s:7.0f} MiB/s  "
          f"ratio {anchor_s / total_s:.2f}")
    print(f"strict anchor openssl + dd:   {strict_s:6.2f} s  {mib / strict_s:7.0f} MiB/s "
          f"(openssl dgst -sha256 {fastest:.2f} s); ours/strict: stream "
          f"{strict_s / stream_s:.2f}, with read-back {strict_s / total_s:.2f}")
    print(f"ours peak RSS:                {peak:6.1f} MiB (goal < 64 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
