"""SIGHUP makes fleetd read its configuration again, as fleet does, without a restart."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from .harness import PYTHON, REPO, Cluster, Etcd, running_cluster, wait_for

UNIT = "[Unit]\nDescription=steady\n\n[Service]\nExecStart=/bin/sleep 1000\n"


def listed_metadata(cluster: Cluster) -> str:
    rows = cluster.fleetctl("list-machines", "--no-legend", "--full").stdout.split()
    return rows[2] if len(rows) >= 3 else ""


def over_unix_socket(cluster: Cluster) -> str:
    node = cluster.nodes[0]
    result = subprocess.run(
        [PYTHON, "-m", "flotilla.daemons.fleetctl.main", f"--endpoint=unix://{node.socket}",
         "list-machines", "--no-legend", "--full"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def stops_of(cluster: Cluster, unit: str) -> list[list[str]]:
    calls = json.loads(cluster.nodes[0].state_file.read_text())["calls"]
    return [call for call in calls if call == ["stop", unit]]


@pytest.mark.timeout(60)
def test_sighup_applies_new_settings_keeping_listeners_process_and_units(etcd: Etcd) -> None:
    with running_cluster(etcd, metadata=[""], agent_ttl="2s") as cluster:
        node = cluster.nodes[0]
        assert node.proc is not None
        cluster.fleetctl("start", "--block-attempts=15", cluster.write_unit("steady.service",
                                                                            UNIT))
        wait_for(lambda: "steady.service" in node.active_units(), 15, "steady.service running")
        assert listed_metadata(cluster) == "-"
        pid = node.proc.pid
        cluster.config_file.write_text(cluster.config_file.read_text()
                                       + 'metadata="role=reloaded"\n')
        node.signal(signal.SIGHUP)
        wait_for(lambda: listed_metadata(cluster) == "role=reloaded", 20,
                 "the machine to be listed with the reloaded metadata")
        assert node.proc.poll() is None and node.proc.pid == pid
        assert "role=reloaded" in over_unix_socket(cluster)  # the socket was kept too
        # The new agent adopted the unit: it kept running and was never stopped, and the
        # machine never left the cluster, so the engine never moved it.
        assert "steady.service" in node.active_units()
        assert stops_of(cluster, "steady.service") == []
        (row,) = [r for r in cluster.list_units() if r[0] == "steady.service"]
        assert row[1] == "active" and row[2].startswith(node.machine_id)
        # The reloaded fleetd still drives its units: a stop reaches the stand-in systemd.
        cluster.fleetctl("stop", "--block-attempts=15", "steady.service")
        wait_for(lambda: "steady.service" not in node.active_units(), 15,
                 "steady.service stopped by the reloaded fleetd")


@pytest.mark.timeout(60)
def test_sighup_with_a_bad_configuration_keeps_the_running_one(etcd: Etcd) -> None:
    with running_cluster(etcd, metadata=[""]) as cluster:
        node = cluster.nodes[0]
        assert node.proc is not None
        good = cluster.config_file.read_text() + 'metadata="role=first"\n'
        cluster.config_file.write_text(good)
        node.signal(signal.SIGHUP)
        wait_for(lambda: listed_metadata(cluster) == "role=first", 20, "first reload")
        cluster.config_file.write_text(good.replace('role=first"', 'role=second"')
                                       + "agent_ttl=soon\n")
        node.signal(signal.SIGHUP)
        wait_for(lambda: "configuration not reloaded" in node.log(), 20,
                 "fleetd to log the rejected configuration")
        rejected = next(line for line in node.log().splitlines()
                        if "configuration not reloaded" in line)
        assert "agent_ttl" in rejected and "fleet.conf:" in rejected
        assert node.proc.poll() is None
        assert listed_metadata(cluster) == "role=first"
