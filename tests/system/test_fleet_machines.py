"""fleet on three booted machines with real systemd: scheduling, failover, status/journal.

fleetd comes from the .deb, runs under each machine's systemd and talks to an etcd on the
host across the machines' bridge. Every scenario checks what each machine's systemd
reports, not what fleet believes.
"""

from __future__ import annotations

import time

import pytest

from .fleet_cluster import AGENT_TTL, RECONCILE_INTERVAL, FleetCluster, wait_for

pytestmark = pytest.mark.timeout(180)

SLEEPER = "[Unit]\nDescription=fleet test sleeper\n\n[Service]\nExecStart=/bin/sleep 3600\n"
FAILOVER_SLACK = 15.0


@pytest.fixture(scope="module")
def fleet(cluster_factory):
    cluster = cluster_factory(3)
    fleet = FleetCluster(cluster, ["web", "web", "db"])
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def cluster(fleet):
    """The machines, for journals on failure."""
    return fleet.cluster


def test_every_machine_joins_with_its_metadata(fleet, cluster):
    for machine in fleet.machines:
        rows = fleet.listed_machines(machine)
        assert len(rows) == 3
        by_ip = {row[1]: row[2] for row in rows}
        for other in fleet.machines:
            assert by_ip[str(other.address)] == f"role={fleet.roles[other.name]}"
        assert fleet.active_state(machine, "fleetd.service") == "active"


def test_simple_unit_lifecycle(fleet, cluster):
    client = fleet.machines[0]
    unit = "sleeper.service"
    path = fleet.submit(client, unit, SLEEPER)
    fleet.fleetctl(client, "submit", path)
    fleet.fleetctl(client, "load", unit)
    hosts = fleet.wait_hosts(unit, lambda h: h == [], 5, "loaded, not started")
    assert hosts == []
    fleet.fleetctl(client, "start", unit)
    (host,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 20, "active on one machine")
    machine = fleet.machine(host)
    assert fleet.hosts_of(unit) == [host]
    fleet.fleetctl(client, "stop", unit)
    wait_for(lambda: fleet.active_state(machine, unit) == "inactive", 20, f"{unit} stopped")
    fleet.fleetctl(client, "destroy", unit)

    def gone() -> bool:
        file_left = machine.run(["test", "-e", f"/run/fleet/units/{unit}"], check=False)
        return file_left.returncode != 0 and fleet.load_state(machine, unit) == "not-found"

    wait_for(gone, 20, f"{unit} file removed and unknown to systemd on {host}")
    assert fleet.hosts_of(unit) == []


def test_start_replace_runs_the_new_unit_file(fleet, cluster):
    client = fleet.machines[2]
    unit = "swapped.service"
    path = fleet.submit(client, unit, SLEEPER)
    fleet.fleetctl(client, "start", path)
    (host,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once")
    machine = fleet.machine(host)
    old_pid = fleet.show(machine, unit, "MainPID")
    fleet.submit(client, unit, SLEEPER.replace("sleep 3600", "sleep 3601"))
    fleet.fleetctl(client, "start", "--replace", path)

    def runs_new_file() -> bool:
        hosts = fleet.hosts_of(unit)
        if len(hosts) != 1:
            return False
        where = fleet.machine(hosts[0])
        return ("3601" in fleet.show(where, unit, "ExecStart")
                and fleet.show(where, unit, "MainPID") != old_pid)

    wait_for(runs_new_file, 30, f"{unit} running the replaced ExecStart")
    assert "3601" in fleet.fleetctl(client, "cat", unit).stdout
    fleet.fleetctl(client, "destroy", unit)
    fleet.wait_hosts(unit, lambda h: h == [], 20, "stopped after destroy")


def test_conflicting_template_instances_spread_over_machines(fleet, cluster):
    client = fleet.machines[1]
    template = fleet.submit(
        client, "hello@.service",
        "[Unit]\nDescription=hello %i\n\n[Service]\nExecStart=/bin/sleep 3600\n\n"
        "[X-Fleet]\nConflicts=hello@*.service\n")
    fleet.fleetctl(client, "submit", template)
    instances = [f"hello@{i}.service" for i in (1, 2, 3)]
    fleet.fleetctl(client, "start", *instances)
    placed = {}
    for unit in instances:
        (placed[unit],) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once")
    assert sorted(placed.values()) == sorted(m.name for m in fleet.machines)
    for unit, host in placed.items():
        instance = unit.split("@")[1].split(".")[0]
        assert fleet.show(fleet.machine(host), unit, "Description") == f"hello {instance}"
    fleet.fleetctl(client, "destroy", *instances)
    for unit in instances:
        fleet.wait_hosts(unit, lambda h: h == [], 20, "stopped after destroy")


def test_metadata_targets_and_global_units(fleet, cluster):
    client = fleet.machines[0]
    db_path = fleet.submit(
        client, "dbonly.service",
        SLEEPER + "\n[X-Fleet]\nMachineMetadata=role=db\n")
    web_path = fleet.submit(
        client, "webglobal.service",
        SLEEPER + "\n[X-Fleet]\nGlobal=true\nMachineMetadata=role=web\n")
    fleet.fleetctl(client, "start", db_path, web_path)
    db_names = [m.name for m in fleet.by_role("db")]
    web_names = sorted(m.name for m in fleet.by_role("web"))
    assert fleet.wait_hosts("dbonly.service", lambda h: h == db_names, 30,
                            "on the db machine") == db_names
    assert fleet.wait_hosts("webglobal.service", lambda h: sorted(h) == web_names, 30,
                            "on both web machines") == web_names
    fleet.fleetctl(client, "destroy", "dbonly.service", "webglobal.service")
    for unit in ("dbonly.service", "webglobal.service"):
        fleet.wait_hosts(unit, lambda h: h == [], 20, "stopped after destroy")


def test_machine_of_and_machine_id_pin_units(fleet, cluster):
    client = fleet.machines[0]
    target = fleet.machines[1]
    machine_id = target.run(["cat", "/etc/machine-id"]).stdout.strip()
    fleet.fleetctl(client, "start", fleet.submit(
        client, "pinned.service", SLEEPER + f"\n[X-Fleet]\nMachineID={machine_id}\n"))
    fleet.fleetctl(client, "start", fleet.submit(
        client, "follower.service", SLEEPER + "\n[X-Fleet]\nMachineOf=pinned.service\n"))
    for unit in ("pinned.service", "follower.service"):
        assert fleet.wait_hosts(unit, lambda h: h == [target.name], 30,
                                f"on {target.name}") == [target.name]
    fleet.fleetctl(client, "destroy", "follower.service", "pinned.service")
    for unit in ("pinned.service", "follower.service"):
        fleet.wait_hosts(unit, lambda h: h == [], 20, "stopped after destroy")


def test_restarting_fleetd_leaves_units_running(fleet, cluster):
    client = fleet.machines[0]
    unit = "steady.service"
    fleet.fleetctl(client, "start", fleet.submit(client, unit, SLEEPER))
    (host,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once")
    machine = fleet.machine(host)
    before = (fleet.show(machine, unit, "MainPID"),
              fleet.show(machine, unit, "ActiveEnterTimestampMonotonic"))
    old_fleetd = fleet.show(machine, "fleetd.service", "MainPID")
    machine.run(["systemctl", "restart", "fleetd.service"])
    wait_for(lambda: fleet.active_state(machine, "fleetd.service") == "active"
             and fleet.show(machine, "fleetd.service", "MainPID") != old_fleetd,
             30, "fleetd back up with a new process")
    # The restarted agent has reconciled once the cluster again reports the unit launched
    # from this machine; then the unit must still be the same process.
    wait_for(lambda: "active" in fleet.fleetctl(
        client, "list-units", "--no-legend", "--full", "--fields", "unit,machine,active"
    ).stdout, 30, "the restarted agent to publish the unit's state again")
    assert fleet.active_state(machine, unit) == "active"
    after = (fleet.show(machine, unit, "MainPID"),
             fleet.show(machine, unit, "ActiveEnterTimestampMonotonic"))
    assert after == before
    assert "local units keep running" in machine.journal(lines=50, unit="fleetd.service")
    # The new fleetd manages the adopted unit: a stop through fleet reaches it.
    fleet.fleetctl(client, "stop", unit)
    wait_for(lambda: fleet.active_state(machine, unit) == "inactive", 20,
             f"{unit} stopped by the restarted fleetd")
    fleet.fleetctl(client, "destroy", unit)
    fleet.wait_hosts(unit, lambda h: h == [], 20, "stopped after destroy")


def test_stopping_fleetd_purges_its_units_and_leaves_the_cluster(fleet, cluster):
    client = fleet.by_role("db")[0]
    unit = "purged.service"
    fleet.fleetctl(client, "start", fleet.submit(
        client, unit, SLEEPER + "\n[X-Fleet]\nMachineMetadata=role=web\n"))
    (host,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once")
    machine = fleet.machine(host)
    machine.run(["systemctl", "stop", "fleetd.service"])
    assert fleet.active_state(machine, unit) == "inactive"
    wait_for(lambda: len(fleet.listed_machines(client)) == 2, 10,
             f"{host} to leave list-machines at once")
    fleet.fleetctl(client, "destroy", unit)
    fleet.wait_hosts(unit, lambda h: h == [], 20, "gone everywhere after destroy")
    machine.run(["systemctl", "start", "fleetd.service"])
    wait_for(lambda: len(fleet.listed_machines(client)) == 3, 20, f"{host} to rejoin")


def test_status_and_journal_from_another_machine(fleet, cluster):
    client = fleet.machines[0]
    unit = "talker.service"
    fleet.fleetctl(client, "start", fleet.submit(
        client, unit, "[Service]\nExecStart=/bin/sh -c 'echo talker-says-hello; "
        "exec sleep 3600'\n\n[X-Fleet]\nMachineMetadata=role=db\n"))
    (host,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once")
    asker = next(m for m in fleet.machines if m.name != host)
    status = fleet.fleetctl(asker, "status", unit).stdout
    assert unit in status and "active (running)" in status
    journal = wait_for(
        lambda: (out := fleet.fleetctl(asker, "journal", unit).stdout)
        and "talker-says-hello" in out and out, 20, "the unit's journal line via fleetctl")
    assert "talker-says-hello" in journal
    fleet.fleetctl(client, "destroy", unit)
    fleet.wait_hosts(unit, lambda h: h == [], 20, "stopped after destroy")


def test_rebooted_machine_rejoins_and_its_unit_keeps_running(fleet, cluster):
    client = fleet.by_role("db")[0]
    unit = "rebooter.service"
    fleet.fleetctl(client, "start", fleet.submit(
        client, unit, SLEEPER + "\n[X-Fleet]\nMachineMetadata=role=web\n"))
    (host,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once")
    machine = fleet.machine(host)
    machine.run(["systemctl", "enable", "fleetd.socket", "fleetd.service"])
    machine.restart()
    # Shutdown purges (a stop job, not a restart), so the unit moves or comes back.
    fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active on one web machine again")
    wait_for(lambda: len(fleet.listed_machines(client)) == 3, 30, f"{host} to rejoin")
    assert fleet.active_state(machine, "fleetd.service") == "active"
    fleet.fleetctl(client, "destroy", unit)
    fleet.wait_hosts(unit, lambda h: h == [], 20, "stopped after destroy")


def test_units_of_a_killed_machine_move_elsewhere(fleet, cluster):
    # Asked from the db machine about a web-only unit, so the client survives the kill
    # and the unit has exactly one place to move to.
    client = fleet.by_role("db")[0]
    unit = "mover.service"
    fleet.fleetctl(client, "start", fleet.submit(
        client, unit, SLEEPER + "\n[X-Fleet]\nMachineMetadata=role=web\n"))
    (host,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once")
    victim = fleet.machine(host)
    (survivor,) = [m for m in fleet.by_role("web") if m is not victim]
    led_engine = fleet.engine_leader() == victim.machine_id
    killed_at = time.monotonic()
    victim.kill()
    budget = AGENT_TTL + RECONCILE_INTERVAL + FAILOVER_SLACK
    moved = fleet.wait_hosts(unit, lambda h: h == [survivor.name], budget,
                             "active again on the surviving web machine")
    took = time.monotonic() - killed_at
    print(f"\nfailover of {unit}: {took:.1f}s after kill (agent_ttl {AGENT_TTL:g}s, "
          f"reconcile {RECONCILE_INTERVAL:g}s, killed machine led the engine: {led_engine})")
    assert moved == [survivor.name]
    wait_for(lambda: len(fleet.listed_machines(client)) == 2, AGENT_TTL + 10,
             "the killed machine to leave list-machines")
