"""kvd versus Debian's etcd 3.4 (v2 API) under the same load, one and three nodes, fsync on.

Usage: ``.venv/bin/python bench/kv/run.py [--seconds 5] [--keys 100000] [--nodes 1,3]
[--profile PY-SPY]``

Single node, for each server in the same run: PUT throughput with 1 and 64 connections and
GET throughput with 64 connections (wrk, 2 threads), the delay from a PUT to its
notification reaching each of 1,000 long-poll watchers, and resident memory after
writing 100,000 keys. Three nodes (loopback addresses, static cluster): PUT at 1 and 64
connections and GET at 64 connections, all sent to the leader; GET is measured with each
server's default consistency (etcd v2 reads locally, kvd linearizably) and with
``quorum=false`` and ``quorum=true`` on both, so like is compared with like. Each kvd
figure is printed with its ratio to etcd's. With ``--profile`` it also samples kvd (the
leader, in a cluster) with py-spy during the 64-connection PUT and GET loads and prints the
functions where the samples land.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.kv.cluster import EtcdCluster, KvdCluster  # noqa: E402
from tests.process.kv.harness import Server, start_etcd, start_kvd  # noqa: E402

PUT_LUA = """
wrk.method = "PUT"
wrk.body = "value=" .. string.rep("a", 64)
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""


def wrk(url: str, connections: int, seconds: float, script: Path | None = None) -> float:
    argv = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d",
            f"{int(seconds)}s", url]
    if script is not None:
        argv[1:1] = ["-s", str(script)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if match is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    if non2xx:
        print(f"    warning: {non2xx.group(1)} non-2xx answers", file=sys.stderr)
    return float(match.group(1))


async def watch_latency(url: str, watchers: int, rounds: int = 3) -> tuple[float, float]:
    """Median and p99 delay (ms) from sending a PUT to each watcher holding the event."""
    delays: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        for round_ in range(rounds):
            key = f"{url}/v2/keys/bench/watch{round_}"

            async def one(key: str = key) -> float:
                async with session.get(key, params={"wait": "true"}) as resp:
                    await resp.read()
                    return time.perf_counter()

            tasks = [asyncio.ensure_future(one()) for _ in range(watchers)]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # every watcher registered before the write
                async with session.get(f"{url}/v2/stats/store") as resp:
                    if (await resp.json())["watchers"] >= watchers:
                        break
                await asyncio.sleep(0.05)
            sent = time.perf_counter()
            async with session.put(key, data={"value": "go"}) as resp:
                await resp.read()
            for finished in await asyncio.gather(*tasks):
                delays.append((finished - sent) * 1000)
    delays.sort()
    return statistics.median(delays), delays[int(len(delays) * 0.99) - 1]


async def fill(url: str, keys: int, concurrency: int = 64) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(keys):
        queue.put_nowait(i)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                async with session.put(f"{url}/v2/keys/fill/d{i % 100}/k{i}",
                                       data={"value": "v" * 64}) as resp:
                    await resp.read()
        await asyncio.gather(*(worker() for _ in range(concurrency)))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def profile(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([py_spy, "record", "--gil", "--format", "raw", "-o", str(out), "-d",
                             str(int(seconds)), "-r", "200", "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, top: int = 15) -> list[str]:
    """Self time per function, self time per package, and inclusive time of our own
    functions (the share of samples with that function anywhere on the stack)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        own[frames[-1]] += int(count)
        total += int(count)
        ours = {re.sub(r":\d+\)$", ")", f) for f in frames if "daemons/" in f}
        for frame in ours:
            inclusive[frame] += int(count)
    if not total:
        return ["no samples"]
    groups: collections.Counter[str] = collections.Counter()
    for frame, n in own.items():
        where = frame.rpartition("(")[2]
        group = next((g for g in ("daemons/kv", "daemons/raft", "aiohttp", "asyncio",
                                  "msgpack", "json", "concurrent") if g in where), "other")
        groups[group] += n
    lines = [f"{total} samples; self time by package: "
             + ", ".join(f"{g} {100 * n / total:.0f}%" for g, n in groups.most_common())]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive time of kvd's own functions:")
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


def profiled_wrk(py_spy: str | None, pid: int, out: Path, url: str, connections: int,
                 seconds: float, script: Path | None = None) -> float:
    """wrk's rate, with py-spy sampling ``pid`` meanwhile when a py-spy path is given."""
    profiler = profile(py_spy, pid, seconds, out) if py_spy else None
    rate = wrk(url, connections, seconds, script)
    if profiler is not None:
        profiler.wait(timeout=seconds + 30)
    return rate


def measure(server: Server, seconds: float, keys: int, workdir: Path,
            py_spy: str | None) -> dict[str, float]:
    script = workdir / "put.lua"
    script.write_text(PUT_LUA)
    url = f"{server.url}/v2/keys/bench/foo"
    spy = py_spy if server.kind == "kvd" else None
    figures: dict[str, float] = {}
    figures["PUT 1 conn (req/s)"] = wrk(url, 1, seconds, script)
    figures["PUT 64 conn (req/s)"] = profiled_wrk(spy, server.proc.pid, workdir / "kvd-put.prof",
                                                  url, 64, seconds, script)
    figures["GET 64 conn (req/s)"] = profiled_wrk(spy, server.proc.pid, workdir / "kvd-get.prof",
                                                  url, 64, seconds)
    median, p99 = asyncio.run(watch_latency(server.url, 1000))
    figures["watch notify median (ms)"] = median
    figures["watch notify p99 (ms)"] = p99
    asyncio.run(fill(server.url, keys))
    figures[f"RSS with {keys} keys (MiB)"] = rss_mib(server.proc.pid)
    return figures


def measure_cluster(cluster: EtcdCluster | KvdCluster, seconds: float, workdir: Path,
                    py_spy: str | None) -> dict[str, float]:
    """The wrk figures against a three-member cluster, all requests to the leader."""
    script = workdir / "put.lua"
    script.write_text(PUT_LUA)
    leader_url, leader_pid = cluster.leader()
    url = f"{leader_url}/v2/keys/bench/foo"
    spy = py_spy if cluster.kind == "kvd" else None
    figures: dict[str, float] = {}
    figures["PUT 1 conn (req/s)"] = wrk(url, 1, seconds, script)
    figures["PUT 64 conn (req/s)"] = profiled_wrk(spy, leader_pid, workdir / "kvd-put.prof",
                                                  url, 64, seconds, script)
    figures["GET 64 conn, default (req/s)"] = profiled_wrk(
        spy, leader_pid, workdir / "kvd-get.prof", url, 64, seconds)
    figures["GET 64 conn, quorum=false"] = wrk(url + "?quorum=false", 64, seconds)
    figures["GET 64 conn, quorum=true"] = wrk(url + "?quorum=true", 64, seconds)
    return figures


def print_table(title: str, results: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'measure':32} {'etcd':>12} {'kvd':>12} {'kvd/etcd':>9}")
    for name, etcd_value in results["etcd"].items():
        kvd_value = results["kvd"][name]
        ratio = kvd_value / etcd_value if etcd_value else float("nan")
        print(f"{name:32} {etcd_value:12.1f} {kvd_value:12.1f} {ratio:9.2f}")


def print_profiles(title: str, workdir: Path) -> None:
    for load, name in (("PUT", "kvd-put.prof"), ("GET", "kvd-get.prof")):
        prof = workdir / name
        if prof.exists() and prof.stat().st_size:
            print(f"\nkvd self time during {load} at 64 connections, {title} (py-spy):")
            for line in summarize_profile(prof):
                print("  " + line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--nodes", default="1,3",
                        help="cluster sizes to measure: 1, 3 or 1,3 (default)")
    parser.add_argument("--profile", metavar="PY_SPY", default=None,
                        help="path to py-spy; samples kvd during the 64-connection PUTs "
                             "and GETs")
    args = parser.parse_args()
    sizes = {part.strip() for part in args.nodes.split(",")}
    if not sizes or not sizes <= {"1", "3"}:
        print(f"--nodes: expected 1, 3 or 1,3, got {args.nodes!r}", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None or shutil.which("etcd") is None:
        print("needs wrk and Debian's etcd-server on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kvbench") as tmp:
        if "1" in sizes:
            single: dict[str, dict[str, float]] = {}
            for kind, host in (("etcd", "127.0.0.71"), ("kvd", "127.0.0.72")):
                workdir = Path(tmp) / kind
                workdir.mkdir()
                server = (start_etcd(workdir, host) if kind == "etcd"
                          else start_kvd(workdir, host))
                try:
                    print(f"measuring {kind}, one node ...", file=sys.stderr)
                    single[kind] = measure(server, args.seconds, args.keys, workdir,
                                           args.profile)
                finally:
                    server.stop()
            print_table("single node", single)
            print_profiles("single node", Path(tmp) / "kvd")
        if "3" in sizes:
            three: dict[str, dict[str, float]] = {}
            for cls in (EtcdCluster, KvdCluster):
                workdir = Path(tmp) / f"{cls.kind}-cluster"
                workdir.mkdir()
                cluster = cls(workdir)
                try:
                    print(f"measuring {cls.kind}, three nodes ...", file=sys.stderr)
                    cluster.start()
                    three[cls.kind] = measure_cluster(cluster, args.seconds, workdir,
                                                      args.profile)
                finally:
                    cluster.stop()
            print_table("three nodes (requests to the leader)", three)
            print_profiles("three nodes, leader", Path(tmp) / "kvd-cluster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
