"""locksmith rolling-reboot benchmark: N booted machines, max=k, against its lower bound.

Every machine runs locksmithd (``etcd-lock``, from the installed .deb) against one kvd on
the host, as in tests/system/test_locksmith_machines.py. Measured in the same run:

* ``one``: one machine alone (max=1): from ``send-need-reboot`` until it has rebooted,
  booted, and given its slot back (the store shows no holder);
* ``roll``: all N at once with max=k, the same span for the last of them.

The lower bound of the roll is ``ceil(N/k) * one`` (k machines at a time, each wave no
faster than a machine alone); the printed ratio says how much the lock's back-off (5 s
doubling, upstream's numbers) and contention cost above it.

Usage (root, system-test rules apply: run under the shared lock):
``flock /tmp/flotilla-system.lock python bench/locksmith/run.py [--machines 5] [--max 2]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.conditions import wait_until  # noqa: E402
from tests.machines import Cluster, Machine  # noqa: E402
from tests.packages import built_packages  # noqa: E402
from tests.process.fleet.harness import Store  # noqa: E402
from tests.system.test_locksmith_machines import Rig  # noqa: E402

DEADLINE = 600.0


def reboot_and_release(rig: Rig, machines: list[Machine]) -> float:
    """Seconds from the need-reboot signals until every machine is back and no slot is held."""
    began = time.monotonic()
    for machine in machines:
        machine.run(["locksmithctl", "send-need-reboot"])
    with ThreadPoolExecutor(max_workers=len(machines)) as pool:
        list(pool.map(lambda m: m.follow_reboot(DEADLINE), machines))
    wait_until(lambda: rig.semaphore()[0].holder_list == (), 120,
               "every slot given back", interval=0.1)
    return time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=5)
    parser.add_argument("--max", type=int, default=2)
    args = parser.parse_args()
    deb = built_packages()["deb"]
    cluster = Cluster(args.machines, prefix="b")
    store = None
    try:
        cluster.boot()
        assert cluster.bridge is not None
        store = Store("kvd", host=str(cluster.bridge.host_address)).start()
        with ThreadPoolExecutor(max_workers=args.machines) as pool:
            list(pool.map(lambda m: m.install_deb(deb), cluster.machines))
        rig = Rig(cluster, store)
        for machine in cluster.machines:
            machine.run(["systemctl", "enable", "locksmithd.service"])
            try:
                rig.configure(machine)
            except Exception:
                print(rig.journal(machine)[-3000:], file=sys.stderr)
                raise
        first = cluster.machines[0]
        rig.ctl(first, "set-max", "1")
        one = reboot_and_release(rig, [first])
        rig.ctl(first, "set-max", str(args.max))
        roll = reboot_and_release(rig, cluster.machines)
        waves = math.ceil(args.machines / args.max)
        bound = waves * one
        print(f"one machine reboot-and-release: {one:.1f}s")
        print(f"roll of {args.machines} machines, max={args.max}: {roll:.1f}s")
        print(f"lower bound ceil({args.machines}/{args.max}) x one = {bound:.1f}s; "
              f"ratio roll/bound = {roll / bound:.2f}")
    finally:
        if store is not None:
            store.stop()
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
