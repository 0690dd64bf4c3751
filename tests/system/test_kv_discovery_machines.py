"""Three machines running kvd from the .deb form a cluster through discovery alone.

The discovery URL comes from ``/new?size=3`` of a kvd on the host. Then the leader's
machine is killed outright; the other two elect a leader, keep taking writes, and
``kvctl cluster-health`` names the dead member unreachable.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conditions import wait_until
from tests.machines.kvd_discovery import HostDiscoveryKvd, form_cluster_by_discovery
from tests.packages import built_packages


def _leader(machine) -> dict:
    out = machine.run(["python3", "-c",
                       "import urllib.request;print(urllib.request.urlopen("
                       "'http://127.0.0.1:2379/v2/members/leader', timeout=3).read().decode())"]
                      ).stdout
    return json.loads(out)


def _members(machine) -> list[dict]:
    out = machine.run(["python3", "-c",
                       "import urllib.request;print(urllib.request.urlopen("
                       "'http://127.0.0.1:2379/v2/members', timeout=3).read().decode())"]
                      ).stdout
    return json.loads(out)["members"]


@pytest.mark.timeout(300)
def test_discovered_cluster_survives_losing_its_leaders_machine(cluster_factory) -> None:
    started = time.monotonic()
    deb = built_packages()["deb"]
    cluster = cluster_factory(3)
    assert cluster.bridge is not None
    service = HostDiscoveryKvd(str(cluster.bridge.host_address))
    try:
        url = service.new(3)
        assert url.startswith(service.url + "/v2/keys/_etcd/registry/"), url
        form_cluster_by_discovery(cluster, deb, url)
        machines = cluster.machines

        expected = [(m.name, (f"http://{m.address}:2380",))
                    for m in sorted(machines, key=lambda m: m.name)]

        def agreed() -> bool:  # names show once each member has published them
            return all(sorted((m["name"], tuple(m["peerURLs"])) for m in _members(x))
                       == expected for x in machines)
        wait_until(agreed, 30, "every member to list the same three members")
        for machine in machines:
            journal = machine.journal(lines=200, unit="kvd.service")
            assert "discovery: found all 3 members" in journal, journal

        first, *_, last = machines
        first.run(["kvctl", "set", "/discovery/written", f"on {first.name}"])
        assert last.run(["kvctl", "get", "/discovery/written"]).stdout.strip() == \
            f"on {first.name}"

        leader = _leader(first)
        victim = next(m for m in machines if m.name == leader["name"])
        survivors = [m for m in machines if m is not victim]
        victim.kill()

        wait_until(lambda: survivors[0].run(["kvctl", "set", "/discovery/after", "kept"],
                                            check=False).returncode == 0,
                   60, "a write accepted after the leader's machine died")
        new_leader = wait_until(lambda: _leader(survivors[1]), 30, "a new leader",
                                tolerate=(Exception,))
        assert new_leader["name"] in {m.name for m in survivors}
        for machine in survivors:
            assert machine.run(["kvctl", "get", "/discovery/after"]).stdout.strip() == "kept"
            assert machine.run(["kvctl", "get", "/discovery/written"]).stdout.strip() == \
                f"on {first.name}"

        health = survivors[1].run(["kvctl", "cluster-health"], check=False)
        assert f"member {leader['id']} is unreachable" in health.stdout, health.stdout
        assert sum("is healthy" in line for line in health.stdout.splitlines()) == 2
        assert health.stdout.splitlines()[-1] == "cluster is degraded"
        assert health.returncode != 0
    finally:
        service.stop()
    assert time.monotonic() - started < 180, "the discovery system test must stay under 3 min"
