"""The README's run command as a test: three machines form a kvd cluster and run fleet.

Then the kvd leader's machine is killed outright, and the other two keep serving.
"""

from __future__ import annotations

import json

import pytest

from tests.conditions import wait_until
from tests.machines.demo import form_cluster
from tests.packages import built_packages


@pytest.fixture(scope="module")
def flotilla_cluster(cluster_factory):
    cluster = cluster_factory(3)
    form_cluster(cluster, built_packages()["deb"])
    return cluster


def _leader_name(machine) -> str:
    out = machine.run(["python3", "-c",
                       "import urllib.request;print(urllib.request.urlopen("
                       "'http://127.0.0.1:2379/v2/members/leader').read().decode())"]).stdout
    return json.loads(out)["name"]


def test_kvd_cluster_is_healthy_and_replicates(flotilla_cluster):
    first, *_, last = flotilla_cluster.machines
    health = first.run(["kvctl", "cluster-health"]).stdout
    members = [line for line in health.splitlines() if line.startswith("member ")]
    assert len(members) == 3 and all("is healthy" in line for line in members), health
    assert health.splitlines()[-1] == "cluster is healthy"
    first.run(["kvctl", "set", "/check/replicated", "yes"])
    assert last.run(["kvctl", "get", "/check/replicated"]).stdout.strip() == "yes"


def test_fleet_spreads_conflicting_instances(flotilla_cluster):
    from tests.machines.demo import SAMPLE_UNIT

    first = flotilla_cluster[0]
    first.write_file("/root/probe@.service", SAMPLE_UNIT.replace("hello@", "probe@"))
    wait_until(lambda: len(first.run(["fleetctl", "list-machines", "--no-legend"]).stdout
                      .splitlines()) == 3, 60, "three fleet machines")
    first.run(["sh", "-c", "cd /root && fleetctl start probe@1.service probe@2.service "
               "probe@3.service"], timeout=180)
    rows = [line.split() for line in first.run(
        ["fleetctl", "list-units", "--no-legend", "--full"]).stdout.splitlines()
        if line.startswith("probe@")]
    assert len(rows) == 3
    assert all(row[2:4] == ["active", "running"] for row in rows), rows
    assert len({row[1] for row in rows}) == 3, "Conflicts must keep the instances apart"
    for row in rows:
        host = next(m for m in flotilla_cluster if m.address and str(m.address) in row[1])
        assert host.run(["systemctl", "is-active", row[0]]).stdout.strip() == "active"


def test_killing_the_leaders_machine_leaves_a_serving_cluster(flotilla_cluster):
    machines = flotilla_cluster.machines
    leader = _leader_name(machines[0])
    victim = next(m for m in machines if m.name == leader)
    survivors = [m for m in machines if m is not victim]
    survivors[0].run(["kvctl", "set", "/check/before-kill", "1"])
    victim.kill()
    wait_until(lambda: survivors[0].run(["kvctl", "set", "/check/after-kill", "2"], check=False)
          .returncode == 0, 60, "a write accepted after the leader's machine died")
    for machine in survivors:
        assert machine.run(["kvctl", "get", "/check/before-kill"]).stdout.strip() == "1"
        assert machine.run(["kvctl", "get", "/check/after-kill"]).stdout.strip() == "2"
    assert _leader_name(survivors[1]) != leader
