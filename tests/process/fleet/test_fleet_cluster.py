"""fleetd + fleetctl end to end against real etcd: fleet's functional scenarios."""

from __future__ import annotations

import signal
import time

import pytest

from .harness import Etcd, kill, running_cluster, wait_for

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


def unit_files(cluster) -> dict[str, list[str]]:
    out = cluster.fleetctl("list-unit-files", "--no-legend", "--full",
                           "--fields", "unit,dstate,state,target").stdout
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}


@pytest.mark.timeout(60)
def test_unit_lifecycle_submit_load_start_stop_unload_destroy(etcd: Etcd) -> None:
    with running_cluster(etcd) as cluster:
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
        assert wait_for(lambda: cluster.running() == {"hello.service": owner}, 10, "start")
        rows = cluster.list_units()
        assert rows == [["hello.service", "active", f"{owner}/{rows[0][2].split('/')[1]}"]]

        cluster.fleetctl("stop", "hello.service", "--block-attempts=10")
        wait_for(lambda: cluster.running() == {}, 10, "stop")
        cluster.fleetctl("unload", "hello.service", "--block-attempts=10")
        wait_for(lambda: cluster.list_units() == [], 10, "state removed after unload")
        assert unit_files(cluster)["hello.service"][:2] == ["inactive", "inactive"]

        assert "Destroyed hello.service" in cluster.fleetctl("destroy", "hello.service").stdout
        assert unit_files(cluster) == {}
        assert cluster.fleetctl("cat", "hello.service", check=False).returncode == 1
        # stopping an inactive unit is an error with fleetctl's exit code
        assert cluster.fleetctl("stop", "nothere.service", check=False).returncode == 1


@pytest.mark.timeout(60)
def test_start_replace_reloads_changed_unit_and_cat_round_trip(etcd: Etcd) -> None:
    with running_cluster(etcd) as cluster:
        cluster.write_unit("svc.service", unit_text(description="one"))
        cluster.fleetctl("start", "svc.service", "--block-attempts=10")
        assert "Description=one" in cluster.fleetctl("cat", "svc.service").stdout
        before = cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "hash").stdout

        cluster.write_unit("svc.service", unit_text(description="two"))
        warned = cluster.fleetctl("start", "svc.service", "--block-attempts=10")
        assert "Add --replace to override" in warned.stderr
        assert "Description=one" in cluster.fleetctl("cat", "svc.service").stdout

        cluster.fleetctl("start", "--replace", "svc.service", "--block-attempts=10")
        assert "Description=two" in cluster.fleetctl("cat", "svc.service").stdout
        after = cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "hash").stdout
        assert before != after
        new_hash = after.strip()

        def running_new() -> bool:
            states = cluster.api("GET", "/state")[1]["states"]
            return [(s["hash"][:7], s["systemdActiveState"]) for s in states] == [
                (new_hash, "active")]

        wait_for(running_new, 10, "the replaced unit to run with its new hash")


@pytest.mark.timeout(60)
def test_conflicts_spread_units_one_per_machine(etcd: Etcd) -> None:
    with running_cluster(etcd) as cluster:
        names = []
        for i in range(5):
            names.append(cluster.write_unit(f"conflict.{i}.service",
                                            unit_text("Conflicts=conflict.*")))
        cluster.fleetctl("start", "--no-block", *names)
        running = wait_for(lambda: len(cluster.running()) == 3 and cluster.running(), 15,
                           "three conflicting units running")
        assert len(set(running.values())) == 3
        time.sleep(1.0)  # give a wrong fourth placement the chance to show up
        assert len(cluster.running()) == 3


@pytest.mark.timeout(60)
def test_machine_of_keeps_pairs_together(etcd: Etcd) -> None:
    with running_cluster(etcd) as cluster:
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
def test_global_units_follow_metadata_and_template_specifiers(etcd: Etcd) -> None:
    meta = ["role=web,hostname=a", "role=db,hostname=b", "role=web,hostname=c"]
    with running_cluster(etcd, metadata=meta) as cluster:
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


@pytest.mark.timeout(60)
def test_killed_machine_units_rescheduled_within_ttl_plus_interval(etcd: Etcd) -> None:
    with running_cluster(etcd, agent_ttl="2s", interval=0.5) as cluster:
        names = [cluster.write_unit(f"job{i}.service", unit_text()) for i in range(6)]
        cluster.fleetctl("start", "--block-attempts=15", *names)
        wait_for(lambda: len(cluster.running()) == 6, 15, "six units running")
        victim = cluster.nodes[1]
        lost = set(victim.active_units())
        assert lost
        started = time.monotonic()
        kill(victim)

        def moved() -> bool:
            running = cluster.running()
            return len(running) == 6 and victim.machine_id not in running.values()

        wait_for(moved, 20, "units of the killed machine to run elsewhere")
        elapsed = time.monotonic() - started
        # agent_ttl (2 s, whole seconds in etcd) + reconcile interval + one lease TTL
        # when the victim held the engine lease, plus slack for the store's TTL sweep.
        assert elapsed < 2 + 0.5 + 3 + 3, elapsed
        machines = cluster.fleetctl("list-machines", "--no-legend", "--full").stdout
        assert victim.machine_id not in machines


@pytest.mark.timeout(60)
def test_sigterm_purges_units_and_withdraws_machine_at_once(etcd: Etcd) -> None:
    with running_cluster(etcd, agent_ttl="30s") as cluster:
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
def test_status_and_journal_served_from_the_owning_machine(etcd: Etcd) -> None:
    with running_cluster(etcd) as cluster:
        owner = cluster.nodes[2]
        cluster.write_unit("far.service", unit_text(f"MachineID={owner.machine_id}"))
        cluster.fleetctl("start", "far.service", "--block-attempts=15")
        status = cluster.fleetctl("status", "far.service", node=0).stdout
        assert "Active: active (running)" in status
        journal = cluster.fleetctl("journal", "far.service", "--lines=5", node=1).stdout
        assert "Started far.service." in journal
        missing = cluster.fleetctl("status", "none.service", check=False)
        assert missing.returncode == 1 and "does not exist" in missing.stderr
