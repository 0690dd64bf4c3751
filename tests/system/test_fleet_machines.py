"""fleet on three booted machines with real systemd, against kvd and against etcd.

fleetd comes from the .deb and runs under each machine's systemd. Every scenario runs
twice: once on a three-member kvd cluster inside the machines, once on Debian's etcd on
the host. Each backend boots one cluster for the whole module and every test starts
from a clean slate (all machines up and connected, no units). Every scenario checks what
each machine's systemd reports, not what fleet believes. The scenarios that kill or cut
off a machine come last so a cluster is rebooted as seldom as possible.
"""

from __future__ import annotations

import time

import pytest

from tests.machines import Cluster

from .fleet_cluster import (
    AGENT_TTL,
    BACKENDS,
    LEASE_TTL,
    RECONCILE_INTERVAL,
    FleetCluster,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)

SLEEPER = "[Unit]\nDescription=fleet test sleeper\n\n[Service]\nExecStart=/bin/sleep 3600\n"
FAILOVER_SLACK = 15.0


@pytest.fixture(scope="module", params=BACKENDS)
def fleet(request, rootfs_template):
    """One booted cluster per backend; pytest finishes one before it boots the next."""
    cluster = Cluster(3)
    fleet = None
    try:
        cluster.boot()
        fleet = FleetCluster(cluster, ["web", "web", "db"], backend=request.param)
        fleet.start()
        yield fleet
    finally:
        try:
            if fleet is not None:
                fleet.stop()
        finally:
            cluster.destroy()


@pytest.fixture
def cluster(fleet):
    """The machines (for journals on failure), reset to all-up and unit-free first."""
    fleet.reset()
    return fleet.cluster


def listed_state(fleet: FleetCluster, client, unit: str) -> list[tuple[str, str]]:
    """(machine id, ACTIVE column) of each ``fleetctl list-units`` row for ``unit``.

    Columns are compared whole: a substring test for "active" also matches "inactive".
    """
    out = fleet.fleetctl(client, "list-units", "--no-legend", "--full",
                         "--fields", "unit,machine,active").stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [(row[1].split("/")[0], row[2]) for row in rows if row[0] == unit and len(row) == 3]


def pinned(machine_id: str) -> str:
    return SLEEPER + f"\n[X-Fleet]\nMachineID={machine_id}\n"


def for_role(role: str, extra: str = "") -> str:
    return SLEEPER + f"\n[X-Fleet]\nMachineMetadata=role={role}\n{extra}"


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
    wait_for(lambda: listed_state(fleet, client, unit) == [(machine.machine_id, "active")],
             30, "the restarted agent to publish the unit's state again")
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


def _engine_has_seen(fleet: FleetCluster, client, unit: str, host: str) -> None:
    """Starts a witness unit on ``host`` and waits for it: the engine has reconciled.

    The engine places every pending unit in each pass, so once a unit submitted later is
    running, any unit still unplaced was considered and refused, not merely not yet seen.
    """
    fleet.fleetctl(client, "start", fleet.submit(client, unit, pinned(
        fleet.machine(host).machine_id)))
    fleet.wait_hosts(unit, lambda h: h == [host], 30, f"witness active on {host}")


def test_one_way_conflict_keeps_the_named_unit_off_either_way(fleet, cluster):
    # Only conflicter names hello; both may run only on the single db machine.
    client = fleet.by_role("db")[0]
    db = client.name
    hello = fleet.submit(client, "hello.service", for_role("db"))
    conflicter = fleet.submit(client, "conflicter.service",
                              for_role("db", "Conflicts=hello.service\n"))
    fleet.fleetctl(client, "start", conflicter)
    fleet.wait_hosts("conflicter.service", lambda h: h == [db], 30, "active on db")
    fleet.fleetctl(client, "start", "--no-block", hello)
    _engine_has_seen(fleet, client, "witness1.service", db)
    assert fleet.hosts_of("hello.service") == []
    assert fleet.hosts_of("conflicter.service") == [db]
    # The conflict goes with the unit that names it: destroy it and hello may start.
    fleet.fleetctl(client, "destroy", "conflicter.service")
    fleet.wait_hosts("hello.service", lambda h: h == [db], 30, "active once the conflict left")
    # The other order: hello runs first, so the unit naming it may not join it.
    fleet.fleetctl(client, "start", "--no-block", conflicter)
    _engine_has_seen(fleet, client, "witness2.service", db)
    assert fleet.hosts_of("conflicter.service") == []
    assert fleet.hosts_of("hello.service") == [db]


def test_multiple_conflicts_globs_all_apply(fleet, cluster):
    first, second, third = fleet.machines
    client = third
    fleet.fleetctl(client, "start",
                   fleet.submit(client, "alpha1.service", pinned(first.machine_id)),
                   fleet.submit(client, "beta1.service", pinned(second.machine_id)),
                   fleet.submit(client, "filler1.service", pinned(third.machine_id)),
                   fleet.submit(client, "filler2.service", pinned(third.machine_id)))
    # Least-loaded alone would pick the first or second machine (one unit each against
    # two); only both globs together leave the third. One unit lists its globs on one
    # line, the other repeats the key: fleet accumulates both forms.
    fleet.fleetctl(client, "start", fleet.submit(
        client, "oneline.service", SLEEPER + "\n[X-Fleet]\nConflicts=alpha*.service "
        "beta*.service\n"), fleet.submit(
        client, "twolines.service", SLEEPER + "\n[X-Fleet]\nConflicts=alpha*.service\n"
        "Conflicts=beta*.service\n"))
    for unit in ("oneline.service", "twolines.service"):
        assert fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once") == [third.name]


def test_replaces_moves_the_replaced_unit_off_the_machine(fleet, cluster):
    client = fleet.by_role("db")[0]
    fleet.fleetctl(client, "start", fleet.submit(client, "original.service", for_role("web")))
    (home,) = fleet.wait_hosts("original.service", lambda h: len(h) == 1, 30, "active once")
    (other,) = [m for m in fleet.by_role("web") if m.name != home]
    # Two pinned units make the original's machine the least loaded web machine, so the
    # kicker lands there and has something to replace.
    fleet.fleetctl(client, "start",
                   fleet.submit(client, "filler1.service", pinned(other.machine_id)),
                   fleet.submit(client, "filler2.service", pinned(other.machine_id)))
    fleet.fleetctl(client, "start", fleet.submit(
        client, "kicker.service", for_role("web", "Replaces=original.service\n")))
    assert fleet.wait_hosts("kicker.service", lambda h: len(h) == 1, 30,
                            "active once") == [home]
    assert fleet.wait_hosts("original.service", lambda h: h == [other.name], 30,
                            f"moved to {other.name}") == [other.name]
    home_machine = fleet.machine(home)
    wait_for(lambda: "original.service" not in fleet.local_unit_files(home_machine), 20,
             f"original.service unloaded from {home}")


def test_template_specifiers_expand_in_the_running_unit_and_in_x_fleet(fleet, cluster):
    client = fleet.machines[0]
    template = fleet.submit(
        client, "spec@.service",
        "[Unit]\nDescription=n=%n N=%N p=%p i=%i\n\n[Service]\nExecStart=/bin/sleep 3600\n"
        "\n[X-Fleet]\nMachineMetadata=role=%i\n")
    fleet.fleetctl(client, "submit", template)
    fleet.fleetctl(client, "start", "--no-block", "spec@nowhere.service")
    fleet.fleetctl(client, "start", "spec@db.service", "spec@web.service")
    db_names = [m.name for m in fleet.by_role("db")]
    web_names = {m.name for m in fleet.by_role("web")}
    (db_host,) = fleet.wait_hosts("spec@db.service", lambda h: h == db_names, 30,
                                  "on the db machine")
    (web_host,) = fleet.wait_hosts("spec@web.service", lambda h: len(h) == 1, 30,
                                   "on one machine")
    assert web_host in web_names
    assert fleet.show(fleet.machine(db_host), "spec@db.service", "Description") == (
        "n=spec@db.service N=spec@db p=spec i=db")
    assert fleet.show(fleet.machine(web_host), "spec@web.service", "Description") == (
        "n=spec@web.service N=spec@web p=spec i=web")
    # role=nowhere matches no machine: submitted before the others, still unplaced.
    assert fleet.hosts_of("spec@nowhere.service") == []
    assert all("spec@nowhere.service" not in fleet.local_unit_files(m)
               for m in fleet.machines)


def test_rebooted_machine_rejoins_and_its_unit_keeps_running_on_one_web_machine(fleet,
                                                                              cluster):
    client = fleet.by_role("db")[0]
    unit = "rebooter.service"
    fleet.fleetctl(client, "start", fleet.submit(
        client, unit, SLEEPER + "\n[X-Fleet]\nMachineMetadata=role=web\n"))
    (host,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once")
    machine = fleet.machine(host)
    web = {m.name for m in fleet.by_role("web")}
    machine.run(["systemctl", "enable", "fleetd.socket", "fleetd.service"])
    seen: list[list[str]] = []  # every sample of where systemd runs the unit, from here on

    def once_on_web(hosts: list[str]) -> bool:
        seen.append(hosts)
        return len(hosts) == 1 and hosts[0] in web

    machine.restart()
    # Shutdown purges (a stop job, not a restart), so the unit moves to the other web
    # machine, or comes back here if this one led the engine and returned within the lease.
    (runner,) = fleet.wait_hosts(unit, once_on_web, 30, "active on one web machine again")
    process = (fleet.show(fleet.machine(runner), unit, "MainPID"),
               fleet.show(fleet.machine(runner), unit, "ActiveEnterTimestampMonotonic"))
    wait_for(lambda: len(fleet.listed_machines(client)) == 3, 30, f"{host} to rejoin")
    assert fleet.active_state(machine, "fleetd.service") == "active"
    # Witness that the rejoined agent has reconciled: the cluster lists the unit as
    # active on the machine that runs it, which the rejoined agent must not disturb.
    wait_for(lambda: listed_state(fleet, client, unit) == [
        (fleet.machine(runner).machine_id, "active")], 30, f"{unit} listed on {runner}")
    assert fleet.wait_hosts(unit, once_on_web, 5, "still once") == [runner]
    assert (fleet.show(fleet.machine(runner), unit, "MainPID"),
            fleet.show(fleet.machine(runner), unit, "ActiveEnterTimestampMonotonic")
            ) == process, "the unit was restarted when the rebooted machine rejoined"
    assert fleet.show(fleet.machine(runner), unit, "SubState") == "running"
    assert not [hosts for hosts in seen if len(hosts) > 1], seen  # never on two at once
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
    print(f"\n[{fleet.backend}] failover of {unit}: {took:.1f}s after kill "
          f"(agent_ttl {AGENT_TTL:g}s, "
          f"reconcile {RECONCILE_INTERVAL:g}s, killed machine led the engine: {led_engine})")
    assert moved == [survivor.name]
    wait_for(lambda: len(fleet.listed_machines(client)) == 2, AGENT_TTL + 10,
             "the killed machine to leave list-machines")


def test_units_of_a_cut_off_machine_move_and_do_not_run_twice_after_healing(fleet, cluster):
    client = fleet.by_role("db")[0]
    unit = "islander.service"
    fleet.fleetctl(client, "start", fleet.submit(client, unit, for_role("web")))
    (host,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once")
    victim = fleet.machine(host)
    (survivor,) = [m for m in fleet.by_role("web") if m is not victim]
    cut_at = time.monotonic()
    victim.cut_network()
    budget = AGENT_TTL + RECONCILE_INTERVAL + FAILOVER_SLACK
    fleet.wait_hosts(unit, lambda h: survivor.name in h, budget,
                     f"active on {survivor.name} while {host} is cut off")
    took = time.monotonic() - cut_at
    print(f"\n[{fleet.backend}] cut-off failover of {unit}: {took:.1f}s")
    # As in fleet, a machine that cannot reach the store does nothing: it keeps its copy.
    assert fleet.active_state(victim, unit) == "active"
    victim.heal_network()
    wait_for(lambda: fleet.active_state(victim, unit) != "active"
             and unit not in fleet.local_unit_files(victim), AGENT_TTL + 30,
             f"{host} to stop and unload its stale copy after healing")
    wait_for(lambda: len(fleet.listed_machines(client)) == 3, 30, f"{host} to rejoin")
    assert fleet.hosts_of(unit) == [survivor.name]


def test_killing_the_engine_leader_hands_over_the_engine_and_moves_its_units(fleet, cluster):
    leader_id = wait_for(fleet.engine_leader, 20, "an engine leader")
    leader = fleet.by_id(leader_id)
    others = [m for m in fleet.machines if m is not leader]
    client = others[0]
    # One pinned unit on each other machine makes the leader's the least loaded.
    fleet.fleetctl(client, "start", *(
        fleet.submit(client, f"anchor{i}.service", pinned(m.machine_id))
        for i, m in enumerate(others)))
    for i, machine in enumerate(others):
        fleet.wait_hosts(f"anchor{i}.service", lambda h, n=machine.name: h == [n], 30,
                         f"pinned to {machine.name}")
    unit = "led.service"
    fleet.fleetctl(client, "start", fleet.submit(client, unit, SLEEPER))
    assert fleet.wait_hosts(unit, lambda h: len(h) == 1, 30, "active once") == [leader.name]
    killed_at = time.monotonic()
    leader.kill()
    budget = LEASE_TTL + AGENT_TTL + RECONCILE_INTERVAL + FAILOVER_SLACK
    (moved,) = fleet.wait_hosts(unit, lambda h: len(h) == 1, budget,
                                "active again on a surviving machine")
    took = time.monotonic() - killed_at
    new_leader = wait_for(lambda: (found := fleet.engine_leader()) != leader_id and found,
                          LEASE_TTL + 10, "another engine to take the lease")
    print(f"\n[{fleet.backend}] engine leader killed: {unit} active on {moved} after "
          f"{took:.1f}s; new leader {new_leader[:8]}")
    assert moved in {m.name for m in others}
    assert new_leader in {m.machine_id for m in others}
