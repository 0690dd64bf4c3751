"""More of fleet's functional scenarios: Replaces, one-way conflicts, fleetd restarts."""

from __future__ import annotations

import json
import time

import pytest

from .harness import Etcd, kill, running_cluster, wait_for


def unit_text(xfleet: str = "") -> str:
    text = "[Unit]\nDescription=t\n\n[Service]\nExecStart=/bin/sleep 1000\n"
    return text + (f"\n[X-Fleet]\n{xfleet}\n" if xfleet else "")


@pytest.mark.timeout(60)
def test_replaces_pushes_the_original_to_another_machine(etcd: Etcd) -> None:
    with running_cluster(etcd, metadata=["", ""]) as cluster:
        cluster.write_unit("old.service", unit_text())
        cluster.fleetctl("start", "old.service", "--block-attempts=15")
        host = wait_for(lambda: cluster.running().get("old.service"), 10, "old running")
        cluster.write_unit("anchor.service", unit_text(f"MachineID={host}"))
        cluster.write_unit("kicker.service",
                           unit_text("Replaces=old.service\nMachineOf=anchor.service"))
        cluster.fleetctl("start", "anchor.service", "kicker.service", "--block-attempts=15")

        def moved() -> dict | None:
            running = cluster.running()
            ok = (running.get("kicker.service") == host and "old.service" in running
                  and running["old.service"] != host)
            return running if ok else None

        wait_for(moved, 15, "old.service to move off the kicker's machine")


@pytest.mark.timeout(60)
def test_one_way_conflict_waits_until_the_conflicter_is_destroyed(etcd: Etcd) -> None:
    with running_cluster(etcd, metadata=[""]) as cluster:
        cluster.write_unit("conflicts-with-hello.service", unit_text("Conflicts=hello.service"))
        cluster.write_unit("hello.service", unit_text())
        cluster.fleetctl("start", "conflicts-with-hello.service", "--block-attempts=15")
        blocked = cluster.fleetctl("start", "hello.service", "--block-attempts=2", check=False)
        assert blocked.returncode == 1
        assert "hello.service" not in cluster.running()
        cluster.fleetctl("destroy", "conflicts-with-hello.service")
        wait_for(lambda: set(cluster.running()) == {"hello.service"}, 15,
                 "hello to start once the conflicting unit is gone")


@pytest.mark.timeout(60)
def test_fleetd_crash_and_restart_keeps_units_running_in_place(etcd: Etcd) -> None:
    with running_cluster(etcd, agent_ttl="3s") as cluster:
        names = [cluster.write_unit(f"keep{i}.service", unit_text()) for i in range(3)]
        cluster.fleetctl("start", "--block-attempts=15", *names)
        before = wait_for(lambda: len(cluster.running()) == 3 and cluster.running(), 10,
                          "three units running")
        node = next(n for n in cluster.nodes if n.machine_id in before.values())
        mine = sorted(u for u, m in before.items() if m == node.machine_id)
        kill(node)
        node.start()
        node.wait_ready()
        time.sleep(3 + 1.5)  # past the old machine key's TTL and a few reconciles
        assert cluster.running() == before
        calls = json.loads(node.state_file.read_text())["calls"]
        assert not [c for c in calls if c[0] == "stop" and c[1] in mine], calls
        assert sorted(node.active_units()) == mine
