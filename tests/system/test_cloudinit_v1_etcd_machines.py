"""Issue #20: the classic 2014 CoreOS cloud-config, unchanged except for its discovery token,
brings booted machines into one cluster.

Each machine has only the .deb (no Debian etcd-server) and, as CoreOS images did, a
``docker`` group. The user-data is the one from
CoreOS's talks: a user, ``coreos.etcd`` with etcd 0.4's ``discovery``, ``addr`` and
``peer-addr``, and ``coreos.units`` starting ``etcd.service`` and ``fleet.service``. The
discovery URL comes from a kvd on the host playing discovery.etcd.io. Afterwards
``etcd.service`` is kvd under its alias, kvd serves etcd 0.4's port 4001 and lists every
member, and every fleetd has registered its machine.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conditions import wait_until
from tests.machines.kvd_discovery import HostDiscoveryKvd
from tests.packages import built_packages
from tests.unit.cloudinit.classic_config import classic

SIZE = 2


def _get(machine, url: str) -> dict:
    out = machine.run(["python3", "-c", "import sys,urllib.request;print(urllib.request."
                       "urlopen(sys.argv[1], timeout=3).read().decode())", url]).stdout
    return json.loads(out)


def _show(machine, unit: str, prop: str) -> str:
    return machine.run(["systemctl", "show", "--value", "-p", prop, unit]).stdout.strip()


@pytest.mark.timeout(420)
def test_the_classic_2014_cloud_config_forms_a_kvd_and_fleet_cluster(cluster_factory) -> None:
    deb = built_packages()["deb"]
    cluster = cluster_factory(SIZE)
    assert cluster.bridge is not None
    service = HostDiscoveryKvd(str(cluster.bridge.host_address))
    try:
        discovery = service.new(SIZE)
        with ThreadPoolExecutor(max_workers=SIZE) as pool:
            list(pool.map(lambda m: m.install_deb(deb), cluster))
        for machine in cluster:
            assert machine.run(["test", "-e", "/lib/systemd/system/etcd.service"],
                               check=False).returncode != 0  # no Debian etcd-server here
            machine.run(["groupadd", "--system", "docker"])  # CoreOS images had it
            machine.write_file("/root/user-data", classic(discovery))

        def apply(machine):  # type: ignore[no-untyped-def]
            env = {"COREOS_PUBLIC_IPV4": machine.address, "COREOS_PRIVATE_IPV4": machine.address}
            return machine.run(["flotilla-cloudinit", "--from-file", "/root/user-data"],
                               env=env, check=False, timeout=240)

        # Starting etcd.service waits for kvd's discovery, which needs every member: all
        # machines apply their user-data at once, as they would boot.
        with ThreadPoolExecutor(max_workers=SIZE) as pool:
            results = dict(zip([m.name for m in cluster], pool.map(apply, cluster),
                               strict=True))
        for name, result in results.items():
            assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
            assert ("[info] coreos.etcd.addr is etcd 0.4's advertise-client-urls; "
                    "configuring kvd") in result.stdout.splitlines()
        for machine in cluster:
            # etcd.service is kvd itself, and fleet.service is fleetd.
            assert _show(machine, "etcd.service", "Id") == "kvd.service"
            assert _show(machine, "fleet.service", "Id") == "fleetd.service"
            assert _show(machine, "kvd.service", "ActiveState") == "active"
            members = _get(machine, "http://127.0.0.1:4001/v2/members")["members"]
            assert sorted(tuple(m["clientURLs"]) for m in members) == sorted(
                (f"http://{m.address}:4001",) for m in cluster)
            assert sorted(tuple(m["peerURLs"]) for m in members) == sorted(
                (f"http://{m.address}:7001",) for m in cluster)
            assert machine.run(["getent", "passwd", "elroy"]).stdout.startswith("elroy:")

        def fleet_machines() -> int:
            reply = _get(cluster[0], "http://127.0.0.1:2379/v2/keys/_coreos.com/fleet/machines")
            return len(reply.get("node", {}).get("nodes", []))
        wait_until(lambda: fleet_machines() == SIZE, 60,
                   f"{SIZE} fleetd machines registered in kvd", tolerate=(Exception,))
        # kvd's Conflicts=etcd.service names itself once etcd.service is its alias: a
        # restart under the alias must bring the same kvd back, still a member.
        first = cluster[0]
        before = _show(first, "kvd.service", "MainPID")
        first.run(["systemctl", "restart", "etcd.service"], timeout=120)
        assert _show(first, "kvd.service", "ActiveState") == "active"
        assert _show(first, "kvd.service", "MainPID") != before
        assert len(_get(first, "http://127.0.0.1:4001/v2/members")["members"]) == SIZE
        # Nothing changes on a second run, the aliases included.
        again = apply(cluster[0])
        assert again.returncode == 0, again.stdout + again.stderr
        assert "no changes: the machine already matches the config" in again.stdout, \
            again.stdout
    finally:
        service.stop()
