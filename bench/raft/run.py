"""Raft benchmark: a 3-member demo cluster on 127.0.0.1-3 with fsync on.

Measures committed proposals per second for 1, 16 and 256 concurrent proposers, p50/p99
commit latency (client-observed: sent until committed and applied on the leader), and CPU
seconds per committed entry summed over the three member processes (from /proc).

The anchor is this machine's own fsync rate on the same file system, measured in the same
run (append 200 bytes + fdatasync, like one WAL group commit). A leader that fsyncs once
per proposal could never beat it; ``proposals/s / fsyncs/s`` above 1 shows group commit.

Run: ``.venv/bin/python bench/raft/run.py [--seconds 8] [--keep]``. Bounded: under 2 min.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IDS = (1, 2, 3)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fsync_rate(directory: Path, seconds: float) -> tuple[float, float]:
    """Raw fsyncs per second, and CPU milliseconds (user+system) each one costs."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    cpu0 = time.process_time()
    try:
        while time.perf_counter() < deadline:
            os.write(fd, b"x" * 200)
            os.fdatasync(fd)
            count += 1
    finally:
        os.close(fd)
        path.unlink()
    cpu_ms = (time.process_time() - cpu0) * 1000 / max(count, 1)
    return count / (time.perf_counter() - started), cpu_ms


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


async def request(reader, writer, obj) -> dict:
    writer.write(json.dumps(obj).encode() + b"\n")
    return json.loads(await reader.readline())


async def wait_leader(clients: dict[int, tuple[str, int]], timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node_id, addr in clients.items():
            try:
                r, w = await asyncio.open_connection(*addr)
                st = await request(r, w, {"op": "status"})
                w.close()
            except OSError:
                continue
            if st["role"] == "leader":
                return node_id
        await asyncio.sleep(0.1)
    raise SystemExit("no leader elected")


async def phase(addr: tuple[str, int], proposers: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def proposer(n: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(*addr)
        seq = 0
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            r = await request(reader, writer, {"op": "put", "value": f"p{n}-{seq}"})
            if r.get("ok"):
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1
            seq += 1
        writer.close()

    await asyncio.gather(*(proposer(n) for n in range(proposers)))
    return errors, latencies


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


async def main_async(args: argparse.Namespace, root: Path) -> None:
    fsyncs, fsync_cpu_ms = fsync_rate(root, 2.0)
    print(f"anchor: raw append+fdatasync on {root}: {fsyncs:,.0f} fsyncs/s "
          f"({fsync_cpu_ms:.3f} CPU ms each)")

    peers, clients = {}, {}
    for i in IDS:
        host = f"127.0.0.{i}"
        peers[i] = (host, free_port(host))
        clients[i] = (host, free_port(host))
    peers_arg = ",".join(f"{i}={h}:{p}" for i, (h, p) in peers.items())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in IDS:
            cmd = [
                sys.executable, "-m", "flotilla.daemons.raft.node", "--id", str(i),
                "--peers", peers_arg, "--data-dir", str(root / f"data{i}"),
                "--client", f"{clients[i][0]}:{clients[i][1]}",
                "--snapshot-every", "50000", "--cluster", "bench",
            ]
            log = open(root / f"node{i}.log", "wb")  # noqa: SIM115 - owned by the child
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
            log.close()
        leader = await wait_leader(clients)
        pids = [p.pid for p in procs]
        await phase(clients[leader], 4, 1.0)  # warm up connections and the log
        print(f"leader: node {leader}; {args.seconds:.0f} s per phase; "
              "clients on the leader, sharing the cores with the members")
        print(f"{'proposers':>9} {'commits/s':>10} {'÷fsync/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU ms/entry':>12} {'errors':>6}")
        for proposers in args.proposers:
            cpu0 = cpu_seconds(pids)
            t0 = time.perf_counter()
            errors, lat = await phase(clients[leader], proposers, args.seconds)
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(pids) - cpu0
            lat.sort()
            rate = len(lat) / elapsed
            per_entry = cpu / len(lat) * 1000 if lat else float("nan")
            print(f"{proposers:>9} {rate:>10,.0f} {rate / fsyncs:>9.2f} "
                  f"{pct(lat, 0.5) * 1000:>8.2f} {pct(lat, 0.99) * 1000:>8.2f} "
                  f"{per_entry:>12.3f} {errors:>6}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each phase")
    parser.add_argument("--dir", help="data directory parent (default: a temp dir in /var/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep data and logs")
    parser.add_argument("--proposers", type=int, nargs="+", default=[1, 16, 256],
                        help="concurrent proposers per phase")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="raft-bench-", dir=args.dir or "/var/tmp"))
    try:
        asyncio.run(main_async(args, root))
    finally:
        if args.keep:
            print(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
