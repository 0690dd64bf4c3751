"""Benchmark of the foundation: test-machine boot and the systemd client's job rate.

Prints each figure with the anchor measured in the same run:
- machine boot (copy + nspawn + systemd reaching ``running``) against the bare cost of
  copying the root filesystem, the floor any copy-based boot pays;
- transient oneshot units started and waited for through our D-Bus client, against the same
  number started with ``systemd-run --wait`` (systemd's own tool, one process per unit).

Usage (root): .venv/bin/python bench/machines/run.py [--units 200] [--machines 3]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flotilla.daemons.systemd import Systemd, exec_start

from tests.machines import Cluster, ensure_rootfs


def copy_time(template: Path) -> float:
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        start = time.monotonic()
        subprocess.run(["cp", "-a", str(template), f"{scratch}/root"], check=True)
        return time.monotonic() - start


async def client_rate(address: str, count: int) -> float:
    systemd = await Systemd.connect(address)
    try:
        start = time.monotonic()
        for i in range(count):
            await systemd.start_transient_unit(
                f"bench-client-{i}.service", [("Type", "s", "oneshot"), exec_start(["/bin/true"])]
            )
        return count / (time.monotonic() - start)
    finally:
        await systemd.close()


def systemd_run_rate(machine, count: int) -> float:
    script = (
        f"for i in $(seq {count}); do systemd-run --quiet --wait --unit=bench-run-$i "
        "-p Type=oneshot /bin/true; done"
    )
    start = time.monotonic()
    machine.run(["sh", "-c", script], timeout=600)
    return count / (time.monotonic() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--machines", type=int, default=3)
    args = parser.parse_args()

    template = ensure_rootfs()
    floor = copy_time(template)
    with Cluster(args.machines) as cluster:
        start = time.monotonic()
        cluster.boot()
        boot = time.monotonic() - start
        machine = cluster[0]
        ours = asyncio.run(client_rate(machine.bus_address(), args.units))
        theirs = systemd_run_rate(machine, args.units)
    print(f"root copy (anchor)                 {floor:7.2f} s")
    print(f"boot {args.machines} machines concurrently      {boot:7.2f} s   "
          f"ratio to one copy {boot / floor:5.1f}")
    print(f"systemd-run --wait (anchor)        {theirs:7.1f} units/s")
    print(f"flotilla client transient units    {ours:7.1f} units/s   ratio {ours / theirs:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
