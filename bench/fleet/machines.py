"""fleet on real test machines: start latency and failover, with where the time goes.

Boots three test machines with fleetd from the .deb against one store (``--backend
kvd``: a kvd member in each machine; ``etcd``: Debian's etcd on the host), agent_ttl 3 s
and engine_reconcile_interval 1 s as in the system tests, then measures:

* **start**: from invoking ``fleetctl start --no-block`` inside a machine to systemd's
  ``ActiveEnterTimestamp`` of the unit, wherever it ran (``--starts`` runs);
* **failover**: from ``machine.kill()`` (a power cut) of the machine running a unit to
  that unit's ``ActiveEnterTimestamp`` on a surviving machine (``--failovers`` runs).
  Each run is split in three: the TTL the victim's presence key had left when the power
  went (read from the store just before), the store expiring it until the engine
  logged the unscheduling (store sweep + watch + engine batching), and from there until
  systemd on the survivor reported the unit active (assignment write, agent watch,
  link, daemon-reload, start).

The machines share the host's clocks, so systemd's and journald's monotonic timestamps
compare directly with the host's ``time.monotonic()``. The killed machine is booted again and the
cluster reset before the next run. Usage (root):
``.venv/bin/python bench/fleet/machines.py [--backend kvd] [--starts 10] [--failovers 8]
[--kill-leader]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
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


def active_enter(machine: Machine, unit: str) -> float | None:
    """When ``unit`` last became active, on the host's monotonic clock.

    systemd in a test machine reads the same kernel CLOCK_MONOTONIC as the host (nspawn
    sets up no time namespace), so its microsecond timestamp compares directly with
    ``time.monotonic()``; the real-time property is printed in whole seconds only.
    """
    value = machine.run(["systemctl", "show", "-P", "ActiveEnterTimestampMonotonic", unit],
                        check=False).stdout.strip()
    return int(value) / 1e6 if value.isdigit() and int(value) > 0 else None


def where_active(fleet: FleetCluster, unit: str) -> tuple[Machine, float] | None:
    for machine in fleet.alive():
        if fleet.active_state(machine, unit) == "active":
            stamp = active_enter(machine, unit)
            if stamp is not None:
                return machine, stamp
    return None


def expiry_of(fleet: FleetCluster, machine: Machine) -> float:
    """When the machine's presence key expires if not refreshed again (host monotonic)."""
    key = f"{FLEET_PREFIX}/machines/{machine.machine_id}/object"
    node = fleet.store.read_node(key)
    assert node is not None, f"{machine.name} is not registered"
    stamp = node["expiration"]
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    wall = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    wall += float(f"0.{fraction}") if fraction else 0.0
    return time.monotonic() + (wall - time.time())


def engine_reacted(fleet: FleetCluster, unit: str, victim: Machine) -> float | None:
    """Journal time (host monotonic) of the engine unscheduling ``unit`` from ``victim``."""
    needle = f"unscheduling {unit} from {victim.machine_id}"
    for machine in fleet.alive():
        out = machine.run(["journalctl", "-u", "fleetd.service", "-o", "json", "--no-pager",
                           "-n", "300"], check=False).stdout
        for line in out.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if needle in str(entry.get("MESSAGE", "")):
                return int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6
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
        started = time.monotonic()
        fleet.fleetctl(client, "start", "--no-block", path)
        _, active_at = wait_for(lambda n=name: where_active(fleet, n), 30, f"{name} active")
        took.append(active_at - started)
    fleet.reset()
    return took


def place_on_leader(fleet: FleetCluster, name: str) -> Machine:
    """Starts ``name`` on the engine leader's machine (one pinned unit on every other
    machine makes it the least loaded) and returns that machine."""
    leader = fleet.by_id(wait_for(fleet.engine_leader, 20, "an engine leader"))
    client = next(m for m in fleet.machines if m is not leader)
    for i, machine in enumerate(m for m in fleet.machines if m is not leader):
        anchor = f"anchor{i}-{name}"
        fleet.fleetctl(client, "start", fleet.submit(client, anchor, UNIT.format(
            name=anchor, extra=f"\n[X-Fleet]\nMachineID={machine.machine_id}\n")))
    fleet.fleetctl(client, "start", fleet.submit(client, name, UNIT.format(
        name=name, extra="")))
    host, _ = wait_for(lambda: where_active(fleet, name), 30, f"{name} active")
    assert host is leader, f"{name} landed on {host.name}, not the leader {leader.name}"
    return leader


def measure_failover(fleet: FleetCluster, run: int, kill_leader: bool) -> dict[str, float]:
    name = f"failover{run}.service"
    if kill_leader:
        victim = place_on_leader(fleet, name)
        survivors = [m for m in fleet.machines if m is not victim]
    else:
        client = fleet.by_role("db")[0]
        fleet.fleetctl(client, "start", fleet.submit(client, name, UNIT.format(
            name=name, extra="\n[X-Fleet]\nMachineMetadata=role=web\n")))
        victim, _ = wait_for(lambda: where_active(fleet, name), 30, f"{name} active")
        survivors = [m for m in fleet.by_role("web") if m is not victim]
    led = fleet.engine_leader() == victim.machine_id
    expires = expiry_of(fleet, victim)
    killed = time.monotonic()
    victim.kill()
    moved, active_at = wait_for(lambda: where_active(fleet, name), 60,
                                f"{name} active again")
    assert moved in survivors, f"{name} moved to {moved.name}"
    reacted = wait_for(lambda: engine_reacted(fleet, name, victim), 10,
                       "the engine's unscheduling in the journal")
    row = {
        "total": active_at - killed,
        "ttl_left_at_kill": expires - killed,
        "store_expiry_to_engine_unschedule": reacted - expires,
        "engine_unschedule_to_active": active_at - reacted,
        "victim_led_engine": float(led),
    }
    print(f"failover run {run}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()),
          file=sys.stderr, flush=True)
    fleet.reset()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("kvd", "etcd"), default="kvd")
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--failovers", type=int, default=8)
    parser.add_argument("--kill-leader", action="store_true",
                        help="kill the engine leader's machine (its unit placed there)")
    args = parser.parse_args()
    ensure_rootfs()
    with Cluster(3) as cluster:
        cluster.boot()
        fleet = FleetCluster(cluster, ["web", "web", "db"], backend=args.backend)
        try:
            fleet.start()
            starts = measure_starts(fleet, args.starts) if args.starts else []
            rows = [measure_failover(fleet, run, args.kill_leader)
                    for run in range(args.failovers)]
        finally:
            fleet.stop()
    result: dict[str, object] = {
        "backend": args.backend, "agent_ttl": AGENT_TTL,
        "engine_reconcile_interval": RECONCILE_INTERVAL, "kill_leader": args.kill_leader,
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
