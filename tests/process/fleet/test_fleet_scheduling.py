"""More of fleet's functional scenarios: Replaces, one-way conflicts, fleetd restarts."""

from __future__ import annotations

import pytest

from .harness import Cluster, Store, kill, running_cluster, wait_for


def unit_text(xfleet: str = "") -> str:
    text = "[Unit]\nDescription=t\n\n[Service]\nExecStart=/bin/sleep 1000\n"
    return text + (f"\n[X-Fleet]\n{xfleet}\n" if xfleet else "")


def witness_started(cluster: Cluster, name: str, machine_id: str) -> None:
    """Starts a unit pinned to ``machine_id`` and waits until that machine's agent has.

    The engine places every pending unit in each pass, and the agent reconciles all of
    its assignments in each pass, so once this later unit runs, both have acted on
    everything that came before it.
    """
    cluster.fleetctl("start", "--no-block", cluster.write_unit(
        name, unit_text(f"MachineID={machine_id}")))
    wait_for(lambda: cluster.running().get(name) == machine_id, 15, f"witness {name} started")


def target_of(cluster: Cluster, unit: str) -> str:
    """The machine the engine scheduled ``unit`` to, "-" when none."""
    out = cluster.fleetctl("list-unit-files", "--no-legend", "--full",
                           "--fields", "unit,target").stdout
    rows = dict(line.split() for line in out.splitlines() if line.strip())
    return rows[unit].split("/")[0]


@pytest.mark.timeout(60)
def test_replaces_pushes_the_original_to_another_machine(store: Store) -> None:
    with running_cluster(store, metadata=["", ""]) as cluster:
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
def test_one_way_conflict_waits_until_the_conflicter_is_destroyed(store: Store) -> None:
    with running_cluster(store, metadata=[""]) as cluster:
        cluster.write_unit("conflicts-with-hello.service", unit_text("Conflicts=hello.service"))
        cluster.write_unit("hello.service", unit_text())
        cluster.fleetctl("start", "conflicts-with-hello.service", "--block-attempts=15")
        cluster.fleetctl("start", "--no-block", "hello.service")
        witness_started(cluster, "witness.service", cluster.nodes[0].machine_id)
        assert target_of(cluster, "hello.service") == "-"
        assert "hello.service" not in cluster.running()
        cluster.fleetctl("destroy", "conflicts-with-hello.service")
        wait_for(lambda: set(cluster.running()) == {"hello.service", "witness.service"}, 15,
                 "hello to start once the conflicting unit is gone")


@pytest.mark.timeout(60)
def test_fleetd_crash_and_restart_keeps_units_running_in_place(store: Store) -> None:
    with running_cluster(store, agent_ttl="3s") as cluster:
        names = [cluster.write_unit(f"keep{i}.service", unit_text()) for i in range(3)]
        cluster.fleetctl("start", "--block-attempts=15", *names)
        before = wait_for(lambda: len(cluster.running()) == 3 and cluster.running(), 10,
                          "three units running")
        node = next(n for n in cluster.nodes if n.machine_id in before.values())
        mine = sorted(u for u, m in before.items() if m == node.machine_id)
        key = f"{cluster.prefix}machines/{node.machine_id}/object"
        kill(node)
        registered = store.get(key)["node"]  # as the killed fleetd last wrote it
        calls_before = len(node.calls())
        node.start()
        # The new fleetd takes the registration over instead of waiting for it to lapse:
        # the key is written again but never deleted (same createdIndex), so the engine
        # never saw the machine leave, and its TTL runs anew, so it cannot lapse now.
        now = wait_for(lambda: (node_ := store.get(key)["node"])["modifiedIndex"]
                       > registered["modifiedIndex"] and node_, 15,
                       "the restarted fleetd to write its registration")
        assert now["createdIndex"] == registered["createdIndex"], (registered, now)
        witness_started(cluster, "witness.service", node.machine_id)
        assert {u: m for u, m in cluster.running().items() if u != "witness.service"} == before
        # The restarted agent adopted its units as they were: no call touched them.
        assert [c for c in node.calls()[calls_before:] if c[1] in mine] == []
        assert sorted(node.active_units()) == sorted([*mine, "witness.service"])
