"""fleet on real test machines: start latency and failover, with where the time goes.

Boots three test machines with fleetd from the .deb against one store (``--backend
kvd``: a kvd member in each machine; ``etcd``: Debian's etcd on the host), agent_ttl 3 s
and engine_reconcile_interval 1 s as in the system tests, then measures:

* **start**: from invoking ``fleetctl start --no-block`` inside a machine to systemd's
  ``ActiveEnterTimestamp`` of the unit, wherever it ran (``--starts`` runs);
* **failover**: from ``machine.kill()`` (a power cut) of the machine running a unit to
  that unit's ``ActiveEnterTimestamp`` on a surviving machine (``--failovers`` runs).
  Each run is split by a watch on the store (host clock at receipt): the victim's
  machine key expiring (the TTL), the engine writing the new ``target``, the engine's
  assignment for the new machine, and the agent getting the unit active.

The machines share the host's real-time clock, so systemd's timestamps and the host's
``time.time()`` are directly comparable. The killed machine is booted again and the
cluster reset before the next run. Usage (root):
``.venv/bin/python bench/fleet/machines.py [--backend kvd] [--starts 10] [--failovers 8]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.machines import Cluster, Machine, ensure_rootfs
from tests.system.fleet_cluster import (
    AGENT_TTL,
    FLEET_PREFIX,
    RECONCILE_INTERVAL,
    FleetCluster,
    wait_for,
)

UNIT = "[Unit]\nDescription=bench {name}\n\n[Service]\nExecStart=/bin/sleep 3600\n{extra}"


class StoreWatch:
    """Records (host time, action, key) for every change under fleet's prefix.

    A chain of v2 long-polls with ``waitIndex``: each reply is stamped when it arrives,
    and the next poll starts at the following index, so no event is missed.
    """

    def __init__(self, base_urls: list[str]) -> None:
        self.base_urls = base_urls
        self.events: list[tuple[float, str, str, str]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.index = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        with urllib.request.urlopen(f"{self.base_urls[0]}/v2/keys/", timeout=5) as reply:
            self.index = int(reply.headers["X-Etcd-Index"])
        self.thread.start()

    def _run(self) -> None:
        turn = 0
        while not self.stopped.is_set():
            base = self.base_urls[turn % len(self.base_urls)]
            url = (f"{base}/v2/keys{FLEET_PREFIX}?wait=true&recursive=true"
                   f"&waitIndex={self.index + 1}")
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    event = json.load(reply)
            except urllib.error.HTTPError as error:
                if error.code == 400 or error.code == 401:  # history cleared: catch up
                    body = json.loads(error.read() or b"{}")
                    self.index = int(body.get("index", self.index))
                continue
            except (OSError, ValueError):
                turn += 1  # timed out or member gone: poll again, maybe elsewhere
                continue
            node = event.get("node", {})
            with self.lock:
                self.events.append((time.time(), event.get("action", ""),
                                    node.get("key", ""), node.get("value") or ""))
            self.index = max(self.index, int(node.get("modifiedIndex", self.index)))

    def first(self, after: float, action: str | None, key_part: str,
              value_part: str = "") -> float | None:
        with self.lock:
            for stamp, act, key, value in self.events:
                if stamp >= after and (action is None or act == action) \
                        and key_part in key and value_part in value:
                    return stamp
        return None

    def stop(self) -> None:
        self.stopped.set()


def active_enter(machine: Machine, unit: str) -> float | None:
    """systemd's ActiveEnterTimestamp of ``unit`` as seconds since the epoch."""
    result = machine.run(["systemctl", "show", "--timestamp=unix", "-P",
                          "ActiveEnterTimestamp", unit], check=False).stdout.strip()
    return float(result[1:]) if result.startswith("@") else None


def where_active(fleet: FleetCluster, unit: str) -> tuple[Machine, float] | None:
    for machine in fleet.alive():
        if fleet.active_state(machine, unit) == "active":
            stamp = active_enter(machine, unit)
            if stamp is not None:
                return machine, stamp
    return None


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def measure_starts(fleet: FleetCluster, runs: int) -> list[float]:
    client = fleet.machines[0]
    took = []
    for i in range(runs):
        name = f"startbench{i}.service"
        path = fleet.submit(client, name, UNIT.format(name=name, extra=""))
        started = time.time()
        fleet.fleetctl(client, "start", "--no-block", path)
        _, active_at = wait_for(lambda n=name: where_active(fleet, n), 30, f"{name} active")
        took.append(active_at - started)
    fleet.reset()
    return took


def measure_failover(fleet: FleetCluster, watch: StoreWatch, run: int) -> dict[str, float]:
    client = fleet.by_role("db")[0]
    name = f"failover{run}.service"
    fleet.fleetctl(client, "start", fleet.submit(client, name, UNIT.format(
        name=name, extra="\n[X-Fleet]\nMachineMetadata=role=web\n")))
    victim, _ = wait_for(lambda: where_active(fleet, name), 30, f"{name} active")
    (survivor,) = [m for m in fleet.by_role("web") if m is not victim]
    killed = time.time()
    victim.kill()
    moved, active_at = wait_for(lambda: where_active(fleet, name), 60,
                                f"{name} active again")
    assert moved is survivor, f"{name} moved to {moved.name}, expected {survivor.name}"
    machine_key = f"/machines/{victim.machine_id}/object"
    expired = wait_for(lambda: watch.first(killed, None, machine_key), 10,
                       "the machine key's expiry in the watch")
    target = watch.first(killed, None, f"/job/{name}/target", survivor.machine_id)
    assigned = watch.first(killed, None, f"/assignments/{survivor.machine_id}/{name}")
    row = {"total": active_at - killed, "ttl_expiry": expired - killed}
    if target is not None:
        row["engine_expiry_to_target"] = target - expired
    if assigned is not None:
        row["engine_expiry_to_assignment"] = assigned - expired
        row["agent_assignment_to_active"] = active_at - assigned
    print(f"failover run {run}: " + ", ".join(f"{k} {v:.2f}s" for k, v in row.items()),
          file=sys.stderr, flush=True)
    fleet.reset()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("kvd", "etcd"), default="kvd")
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--failovers", type=int, default=8)
    args = parser.parse_args()
    ensure_rootfs()
    with Cluster(3) as cluster:
        cluster.boot()
        fleet = FleetCluster(cluster, ["web", "web", "db"], backend=args.backend)
        try:
            fleet.start()
            if args.backend == "kvd":
                urls = [f"http://{m.address}:2379" for m in fleet.by_role("db")]
            else:
                urls = [fleet.store.local_url]  # type: ignore[attr-defined]
            watch = StoreWatch(urls)
            watch.start()
            starts = measure_starts(fleet, args.starts) if args.starts else []
            rows = [measure_failover(fleet, watch, run) for run in range(args.failovers)]
            watch.stop()
        finally:
            fleet.stop()
    result: dict[str, object] = {
        "backend": args.backend, "agent_ttl": AGENT_TTL,
        "engine_reconcile_interval": RECONCILE_INTERVAL,
    }
    if starts:
        result["start_to_active_seconds"] = summary(starts) | {"runs": len(starts)}
    if rows:
        result["failover_seconds"] = {
            key: summary([row[key] for row in rows if key in row])
            for key in rows[0]} | {"runs": len(rows)}
        result["failover_goal_met"] = max(row["total"] for row in rows) < 5.0
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
