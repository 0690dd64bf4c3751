"""fleet scheduling benchmark: one engine and N simulated machines against a real store.

The machines run the real agent code with the in-memory systemd stand-in (all in one
process); the engine runs in its own process so its CPU time is measured alone. The
units are submitted with the same writes the API makes. Reported:

* time from the first submission until every unit runs on some machine,
* store requests per unit (submission, engine, agents),
* engine CPU seconds,
* the anchor: raw PUT rate of the same store measured in the same run, and the ratio
  of "units launched per second" to it.

Usage: ``python bench/fleet/run.py [--units 1000] [--machines 100] [--store URL,...]``
(without ``--store`` a temporary etcd with ``--enable-v2``, or with ``--kvd`` our kvd,
is started on 127.0.0.x; ``--members 3`` makes it a three-member cluster, and the
simulated machines then talk to the members in turn).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from flotilla.daemons.fleet.agent import Agent  # noqa: E402
from flotilla.daemons.fleet.engine import Engine  # noqa: E402
from flotilla.daemons.fleet.model import UnitOption  # noqa: E402
from flotilla.daemons.fleet.registry import MachineState, Registry  # noqa: E402
from flotilla.daemons.fleet.standin import StandInSystemd  # noqa: E402
from flotilla.daemons.kvclient import KVClient  # noqa: E402


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def process_cpu(pid: int) -> float:
    """User+system CPU seconds of a running process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_store(workdir: Path, kvd: bool = False,
                members: int = 1) -> tuple[list[subprocess.Popen], list[str]]:
    """etcd (v2 on) or kvd with ``members`` members on 127.0.0.61..; returns (procs, urls)."""
    hosts = [f"127.0.0.{61 + i}" for i in range(members)]
    names = [f"b{i}" for i in range(members)]
    urls = [f"http://{host}:{free_port(host)}" for host in hosts]
    peers = [f"http://{host}:{free_port(host)}" for host in hosts]
    initial = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
    procs = []
    for name, url, peer in zip(names, urls, peers, strict=True):
        with open(workdir / f"{name}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [*([sys.executable, "-m", "flotilla.daemons.kv"] if kvd else ["etcd"]),
                 "--enable-v2", "--name", name, "--data-dir", str(workdir / name),
                 "--listen-client-urls", url, "--advertise-client-urls", url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", initial],
                stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 30
    for url in urls:
        while True:
            try:
                urllib.request.urlopen(f"{url}/v2/keys/?quorum=true", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    for proc in procs:
                        proc.kill()
                    raise SystemExit(f"store member {url} did not start") from None
                time.sleep(0.1)
    return procs, urls


async def put_rate(url: str, count: int, concurrency: int) -> float:
    """Raw PUTs per second through the same client and concurrency the daemons use."""
    async with KVClient([url]) as kv:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with semaphore:
                await kv.set(f"/bench-anchor/k{i}", "x" * 64)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - started
        await kv.delete("/bench-anchor", recursive=True)
    return count / elapsed


async def engine_process(url: str, prefix: str, interval: float) -> None:
    """Child mode: run the engine until SIGTERM, then print its numbers as JSON."""
    kv = KVClient([url])
    engine = Engine(Registry(kv, prefix), "bench-engine", interval=interval)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(engine.run())
    await stop.wait()
    task.cancel()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    relists = engine._jobs_mirror.relists if engine._jobs_mirror else -1
    print(json.dumps({"requests": kv.request_count, "reconciles": engine.reconciles,
                      "relists": relists,
                      "cpu": usage.ru_utime + usage.ru_stime}), flush=True)
    await engine.release()
    await kv.close()


def store_cpu(pids: list[int]) -> float:
    return sum(process_cpu(pid) for pid in pids) if pids else -1.0


async def main_async(args: argparse.Namespace, urls: list[str], workdir: Path,
                     store_pids: list[int]) -> dict:
    url = urls[0]
    anchor = await put_rate(url, args.anchor_puts, 32)
    store_cpu_before = store_cpu(store_pids)
    own_cpu_before = time.process_time()
    prefix = f"/bench_fleet/{os.getpid()}/"
    engine = subprocess.Popen(
        [sys.executable, __file__, "--engine-child", "--store", url, "--prefix", prefix,
         "--interval", str(args.interval)],
        stdout=subprocess.PIPE, text=True)
    agents: list[Agent] = []
    clients: list[KVClient] = []
    try:
        for i in range(args.machines):
            # Each machine talks to "its" member, as fleetd talks to its local kvd.
            kv = KVClient([urls[i % len(urls)]])
            clients.append(kv)
            machine = MachineState(id=f"{i:04d}" + "b" * 28, public_ip=f"10.0.{i // 250}.{i % 250}")
            agent = Agent(Registry(kv, prefix), StandInSystemd(), machine,
                          units_dir=workdir / f"m{i}", ttl=30)
            agents.append(agent)
        await asyncio.gather(*(agent.start() for agent in agents))
        submit_kv = KVClient([url])
        clients.append(submit_kv)
        registry = Registry(submit_kv, prefix)
        before = {id(kv): kv.request_count for kv in clients}

        semaphore = asyncio.Semaphore(32)

        async def submit(i: int) -> None:
            options = [UnitOption("Unit", "Description", f"bench unit {i}"),
                       UnitOption("Service", "ExecStart", f"/bin/sleep {i}")]
            async with semaphore:
                await registry.create_unit(f"bench{i}.service", options, "launched")

        started = time.perf_counter()
        await asyncio.gather(*(submit(i) for i in range(args.units)))
        submitted = time.perf_counter() - started
        deadline = started + args.timeout
        launched = 0
        while time.perf_counter() < deadline:
            launched = sum(len(a.systemd.active) for a in agents)  # type: ignore[attr-defined]
            if launched >= args.units:
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        store_seconds = store_cpu(store_pids) - store_cpu_before if store_pids else -1.0
        agents_cpu = time.process_time() - own_cpu_before
        per_machine = [len(a.systemd.active) for a in agents]  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)  # let the last state writes land before counting
        agent_requests = sum(kv.request_count - before[id(kv)] for kv in clients[:-1])
        submit_requests = submit_kv.request_count - before[id(submit_kv)]
    finally:
        engine.send_signal(signal.SIGTERM)
        engine_out, _ = engine.communicate(timeout=30)
        for agent in agents:
            await agent.stop(purge=False)
        for kv in clients:
            await kv.close()
    engine_stats = json.loads(engine_out.strip().splitlines()[-1])
    return {
        "units": args.units, "machines": args.machines, "launched": launched,
        "seconds_to_all_launched": round(elapsed, 3), "submit_seconds": round(submitted, 3),
        "units_per_machine_min_max": [min(per_machine), max(per_machine)],
        "requests_per_unit": {
            "submit": round(submit_requests / args.units, 2),
            "agents": round(agent_requests / args.units, 2),
            "engine": round(engine_stats["requests"] / args.units, 2),
        },
        "engine_cpu_seconds": round(engine_stats["cpu"], 3),
        "agents_and_submitter_cpu_seconds": round(agents_cpu, 3),
        "store_cpu_seconds": round(store_seconds, 3),
        "store_members": len(urls),
        "engine_reconciles": engine_stats["reconciles"],
        "engine_relists": engine_stats["relists"],
        "anchor_put_per_second": round(anchor, 1),
        "ratio_units_launched_per_s_to_put_per_s": round(args.units / elapsed / anchor, 4),
        "goal_met": launched >= args.units and elapsed < 10.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--store", default="", help="etcd v2 URL (default: start etcd)")
    parser.add_argument("--kvd", action="store_true",
                        help="start our kvd instead of etcd")
    parser.add_argument("--members", type=int, default=1,
                        help="store members to start (agents spread over them)")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--anchor-puts", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--engine-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.engine_child:
        asyncio.run(engine_process(args.store, args.prefix, args.interval))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    procs: list[subprocess.Popen] = []
    try:
        urls = args.store.split(",") if args.store else []
        if not urls:
            procs, urls = start_store(workdir, kvd=args.kvd, members=args.members)
        result = asyncio.run(main_async(args, urls, workdir, [p.pid for p in procs]))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0 if result["launched"] >= args.units else 1


if __name__ == "__main__":
    sys.exit(main())
