"""fleetd + fleetctl end to end against a real store: fleet's functional scenarios.

The agents drive the systemd stand-in, so these tests judge what the engine and the
agents decided (placements, the calls each agent made, the states each published and
for which file), never the load/active/sub states the stand-in makes up; what systemd
does with the units is checked on booted machines in tests/system.
"""

from __future__ import annotations

import signal
import time

import pytest
from flotilla.daemons.fleet import model

from .harness import Cluster, Store, kill, on_every_store, running_cluster, wait_for

#: The fleet settings of the failover test and what its bound is made of.
AGENT_TTL = 2.0  # the victim's presence key outlives its last refresh by this much
INTERVAL = 0.5  # engine_reconcile_interval: the latest a missed event is made up for
EXPIRY_SWEEP = 0.5  # etcd removes expired keys every 500 ms (kvd every 100 ms)
SLACK = 1.5  # the engine's and agent's work and the test's polling, on 2 shared cores

HELLO = """[Unit]
Description=Hello

[Service]
ExecStart=/bin/sleep 1000
"""


def unit_text(xfleet: str = "", description: str = "test") -> str:
    text = f"[Unit]\nDescription={description}\n\n[Service]\nExecStart=/bin/sleep 1000\n"
    if xfleet:
        text += f"\n[X-Fleet]\n{xfleet}\n"
    return text


def full_hash(text: str) -> str:
    """The hash fleet gives a unit file (what agents publish with each state)."""
    return model.unit_hash(model.parse_unit_file(text))


def targets(cluster: Cluster) -> dict[str, str]:
    """unit → machine id the engine scheduled it to ("-" when it is not scheduled)."""
    return {unit: fields[2].split("/")[0] for unit, fields in unit_files(cluster).items()}


def engine_has_seen(cluster: Cluster, witness: str) -> str:
    """Starts a unit nothing constrains and waits until an agent has started it.

    The engine places every pending unit in each pass, so once a unit submitted after
    the others is running, any of them still unplaced was considered and refused, not
    merely not yet seen. Returns the machine the witness runs on.
    """
    cluster.fleetctl("start", "--no-block", cluster.write_unit(witness, unit_text()))
    return wait_for(lambda: cluster.running().get(witness), 15, f"witness {witness} started")


def unit_files(cluster) -> dict[str, list[str]]:
    out = cluster.fleetctl("list-unit-files", "--no-legend", "--full",
                           "--fields", "unit,dstate,state,target").stdout
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}


@on_every_store
@pytest.mark.timeout(60)
def test_unit_lifecycle_submit_load_start_stop_unload_destroy(store: Store) -> None:
    with running_cluster(store) as cluster:
        cluster.write_unit("hello.service", HELLO)
        cluster.fleetctl("submit", "hello.service")
        assert unit_files(cluster)["hello.service"][:2] == ["inactive", "inactive"]

        out = cluster.fleetctl("load", "hello.service", "--block-attempts=10").stdout
        assert "Unit hello.service loaded on" in out
        files = unit_files(cluster)["hello.service"]
        assert files[:2] == ["loaded", "loaded"]
        owner = files[2].split("/")[0]
        assert cluster.running() == {}

        out = cluster.fleetctl("start", "hello.service", "--block-attempts=10").stdout
        assert f"Unit hello.service launched on {owner[:8]}..." in out
        assert wait_for(lambda: cluster.placements() == {"hello.service": [owner]}, 10,
                        "started on its machine only")
        assert wait_for(lambda: cluster.published_states(), 10, "a state published") == {
            "hello.service": [(owner, full_hash(HELLO))]}

        cluster.fleetctl("stop", "hello.service", "--block-attempts=10")
        wait_for(lambda: cluster.running() == {}, 10, "stop")
        cluster.fleetctl("unload", "hello.service", "--block-attempts=10")
        wait_for(lambda: cluster.published_states() == {}, 10, "state removed after unload")
        assert unit_files(cluster)["hello.service"][:2] == ["inactive", "inactive"]

        assert "Destroyed hello.service" in cluster.fleetctl("destroy", "hello.service").stdout
        assert unit_files(cluster) == {}
        assert cluster.fleetctl("cat", "hello.service", check=False).returncode == 1
        # stopping an inactive unit is an error with fleetctl's exit code
        assert cluster.fleetctl("stop", "nothere.service", check=False).returncode == 1


@pytest.mark.timeout(60)
def test_start_replace_reloads_changed_unit_and_cat_round_trip(store: Store) -> None:
    with running_cluster(store) as cluster:
        cluster.write_unit("svc.service", unit_text(description="one"))
        cluster.fleetctl("start", "svc.service", "--block-attempts=10")
        owner_id = wait_for(lambda: cluster.running().get("svc.service"), 10, "svc started")
        owner = next(n for n in cluster.nodes if n.machine_id == owner_id)
        assert "Description=one" in cluster.fleetctl("cat", "svc.service").stdout
        before = cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "hash").stdout

        cluster.write_unit("svc.service", unit_text(description="two"))
        warned = cluster.fleetctl("start", "svc.service", "--block-attempts=10")
        assert "Add --replace to override" in warned.stderr
        assert "Description=one" in cluster.fleetctl("cat", "svc.service").stdout

        calls_before = len(owner.calls())
        cluster.fleetctl("start", "--replace", "svc.service", "--block-attempts=10")
        assert "Description=two" in cluster.fleetctl("cat", "svc.service").stdout
        after = cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "hash").stdout
        assert before != after
        new_hash = full_hash(unit_text(description="two"))
        assert after.strip() == new_hash[:7]

        # The owner stops the old unit and drops its file before it links the new one
        # and starts it; then it publishes the unit's state with the new file's hash.
        def replaced() -> list[str]:
            return [kind for kind, unit in owner.calls()[calls_before:] if unit == "svc.service"]

        wait_for(lambda: replaced() == ["stop", "disable", "reset-failed", "link", "start"],
                 10, "the owner to replace the unit")
        wait_for(lambda: cluster.published_states() == {"svc.service": [(owner_id, new_hash)]},
                 10, "the owner to publish the unit with its new file")
        assert "Description=two" in (owner.dir / "units" / "svc.service").read_text()


@pytest.mark.timeout(60)
def test_conflicts_spread_units_one_per_machine(store: Store) -> None:
    with running_cluster(store) as cluster:
        names = []
        for i in range(5):
            names.append(cluster.write_unit(f"conflict.{i}.service",
                                            unit_text("Conflicts=conflict.*")))
        cluster.fleetctl("start", "--no-block", *names)
        running = wait_for(lambda: len(cluster.running()) == 3 and cluster.running(), 15,
                           "three conflicting units running")
        assert len(set(running.values())) == 3
        engine_has_seen(cluster, "witness.service")
        # The engine decided: three placed on three machines, two refused everywhere.
        placed = {unit: machine for unit, machine in targets(cluster).items()
                  if unit in names and machine != "-"}
        assert placed == running, (placed, running)
        assert {unit for unit, machines in cluster.placements().items()
                if unit in names} == set(running)


@pytest.mark.timeout(60)
def test_machine_of_keeps_pairs_together(store: Store) -> None:
    with running_cluster(store) as cluster:
        args = []
        for i in range(3):
            args.append(cluster.write_unit(f"ping.{i}.service",
                                           unit_text("Conflicts=ping.*")))
            args.append(cluster.write_unit(f"pong.{i}.service",
                                           unit_text(f"MachineOf=ping.{i}.service")))
        cluster.fleetctl("start", "--block-attempts=15", *args)
        running = wait_for(lambda: len(cluster.running()) == 6 and cluster.running(), 15,
                           "six units running")
        for i in range(3):
            assert running[f"ping.{i}.service"] == running[f"pong.{i}.service"]
        assert len({running[f"ping.{i}.service"] for i in range(3)}) == 3


@pytest.mark.timeout(60)
def test_global_units_follow_metadata_and_template_specifiers(store: Store) -> None:
    meta = ["role=web,hostname=a", "role=db,hostname=b", "role=web,hostname=c"]
    with running_cluster(store, metadata=meta) as cluster:
        cluster.write_unit("web-agent.service",
                           unit_text("Global=true\nMachineMetadata=role=web"))
        cluster.write_unit("pinned@.service", unit_text("MachineMetadata=hostname=%i"))
        out = cluster.fleetctl("start", "web-agent.service", "pinned@b.service",
                               "--block-attempts=15").stdout
        assert "Triggered global unit web-agent.service start" in out
        by_id = {n.machine_id: n for n in cluster.nodes}
        a, b, c = cluster.nodes

        def placed() -> bool:
            on = {u: [m for m in by_id if u in by_id[m].active_units()]
                  for u in ("web-agent.service", "pinned@b.service")}
            return (sorted(on["web-agent.service"]) == sorted([a.machine_id, c.machine_id])
                    and on["pinned@b.service"] == [b.machine_id])

        wait_for(placed, 15, "global unit on web machines, instance on hostname=b")
        files = unit_files(cluster)
        assert files["web-agent.service"] == ["launched", "-", "global"]
        # an instance whose metadata matches no machine never launches
        cluster.write_unit("pinned@.service", unit_text("MachineMetadata=hostname=%i"))
        failed = cluster.fleetctl("start", "pinned@zzz.service", "--block-attempts=1",
                                  check=False)
        assert failed.returncode == 1 and "timed out" in failed.stderr
        machines = cluster.fleetctl("list-machines", "--no-legend", "--full").stdout
        assert "hostname=a,role=web" in machines


@on_every_store
@pytest.mark.timeout(60)
def test_killed_machine_units_rescheduled_within_ttl_plus_interval(store: Store) -> None:
    with running_cluster(store, agent_ttl=f"{AGENT_TTL:.0f}s", interval=INTERVAL) as cluster:
        names = [cluster.write_unit(f"job{i}.service", unit_text()) for i in range(6)]
        cluster.fleetctl("start", "--block-attempts=15", *names)
        wait_for(lambda: len(cluster.running()) == 6, 15, "six units running")
        victim = cluster.nodes[1]
        survivors = {n.machine_id for n in cluster.nodes if n is not victim}
        lost = set(victim.active_units())
        assert lost
        started = time.monotonic()
        kill(victim)

        def moved() -> bool:
            # placements() reads live machines only: each unit started exactly once there.
            return cluster.placements().keys() == set(names) and all(
                len(machines) == 1 for machines in cluster.placements().values())

        wait_for(moved, 20, "units of the killed machine to run elsewhere", interval=0.05)
        elapsed = time.monotonic() - started
        assert all(cluster.running()[unit] in survivors for unit in lost)
        # The victim's key lapses agent_ttl after its last refresh and the store removes
        # it at its next sweep; the engine reacts to the departure at once (a leader's
        # departure too: another engine takes the lease over without waiting for it),
        # or at its next interval at the latest; the rest is work and polling.
        bound = AGENT_TTL + EXPIRY_SWEEP + INTERVAL + SLACK
        print(f"[{store.backend}] moved {elapsed:.2f}s after the kill (bound {bound}s)")
        assert elapsed < bound, elapsed
        machines = cluster.fleetctl("list-machines", "--no-legend", "--full").stdout
        assert victim.machine_id not in machines


@pytest.mark.timeout(60)
def test_sigterm_purges_units_and_withdraws_machine_at_once(store: Store) -> None:
    with running_cluster(store, agent_ttl="30s") as cluster:
        victim = cluster.nodes[2]
        cluster.write_unit("pin.service", unit_text(f"MachineID={victim.machine_id[:8]}"))
        cluster.write_unit("free.service", unit_text())
        cluster.fleetctl("start", "--block-attempts=15", "pin.service", "free.service")
        wait_for(lambda: "pin.service" in victim.active_units(), 10, "pinned unit running")
        victim.signal(signal.SIGTERM)
        assert victim.proc is not None and victim.proc.wait(20) == 0
        # the stand-in recorded the stop before fleetd exited
        assert "pin.service" not in victim.active_units()
        machines = cluster.fleetctl("list-machines", "--no-legend", "--full").stdout
        assert victim.machine_id not in machines  # gone long before the 30 s TTL
        wait_for(lambda: "pin.service" not in [r[0] for r in cluster.list_units()], 10,
                 "pinned unit's state to go")
        assert "free.service" in cluster.running()


@pytest.mark.timeout(60)
def test_status_and_journal_served_from_the_owning_machine(store: Store) -> None:
    with running_cluster(store) as cluster:
        owner = cluster.nodes[2]
        cluster.write_unit("far.service", unit_text(f"MachineID={owner.machine_id}"))
        cluster.fleetctl("start", "far.service", "--block-attempts=15")
        wait_for(lambda: "far.service" in owner.active_units(), 10, "far.service started")
        # Only the owner's agent has the unit: its file lies in the owner's units
        # directory and only the owner's systemd has a journal for it. What the text
        # says about the unit's state is the stand-in's and is not judged here.
        status = cluster.fleetctl("status", "far.service", node=0).stdout
        assert str(owner.dir / "units" / "far.service") in status, status
        journal = cluster.fleetctl("journal", "far.service", "--lines=5", node=1).stdout
        assert "far.service" in journal, journal
        for asker in (0, 1):
            other = cluster.nodes[asker]
            assert not any(unit == "far.service" for _, unit in other.calls())
        missing = cluster.fleetctl("status", "none.service", check=False)
        assert missing.returncode == 1 and "does not exist" in missing.stderr
