"""A store that stalls for longer than agent_ttl must not restart every unit.

No agent can refresh its presence key while the store is stalled; when the store
resumes it expires every lapsed key in one go, and the engine finds all machines gone
at once. fleet took that as all machines dying, unscheduled every unit and scheduled
them again (its flapping complaint); fleetd holds such a mass departure as a store
outage instead (see ``flotilla.daemons.fleet.presence``).
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from .harness import Etcd, running_cluster, wait_for

UNIT = ("[Unit]\nDescription=outage test\n\n[Service]\nExecStart=/bin/sleep 1000\n\n"
        "[X-Fleet]\nConflicts=keep@*.service\n")
AGENT_TTL = 2.0
STALL = 5.0  # longer than agent_ttl, so every presence key has lapsed when it ends
ATTEMPTS = 3


def stops(node) -> list[str]:
    try:
        calls = json.loads(node.state_file.read_text())["calls"]
    except (FileNotFoundError, ValueError):
        return []
    return [name for kind, name in calls if kind == "stop"]


@pytest.fixture
def etcd():
    server = Etcd("127.0.0.36").start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()


@pytest.mark.timeout(150)
def test_units_stay_put_through_a_store_stall_longer_than_agent_ttl(etcd: Etcd) -> None:
    with running_cluster(etcd, agent_ttl=f"{AGENT_TTL:.0f}s", interval=0.5) as cluster:
        names = [cluster.write_unit(f"keep@{i}.service", UNIT) for i in range(3)]
        cluster.fleetctl("start", "--block-attempts=15", *names)
        wait_for(lambda: len(set(cluster.running().values())) == 3, 15,
                 "three units on three machines")
        placed = cluster.running()

        def all_back() -> bool:
            listed = cluster.fleetctl("list-machines", "--no-legend", "--full").stdout
            return all(node.machine_id in listed for node in cluster.nodes)

        try:
            # A refresh already queued in the stalled store's socket may land before the
            # store's own expiry sweep when it resumes; stall again until the keys lapse.
            for _ in range(ATTEMPTS):
                etcd.proc.send_signal(signal.SIGSTOP)
                time.sleep(STALL)
                etcd.proc.send_signal(signal.SIGCONT)
                wait_for(all_back, 20, "every machine to register again")
                if "registering again" in "".join(node.log() for node in cluster.nodes):
                    break
            else:
                pytest.fail(f"{ATTEMPTS} stalls did not expire the presence keys")
            watch_until = time.monotonic() + 2 * AGENT_TTL + 2
            while time.monotonic() < watch_until:
                assert cluster.running() == placed
                time.sleep(0.2)
            assert [stops(node) for node in cluster.nodes] == [[], [], []]
        finally:
            for node in cluster.nodes:  # shown only if the test failed
                print(f"--- fleetd {node.index}\n{node.log()}")
