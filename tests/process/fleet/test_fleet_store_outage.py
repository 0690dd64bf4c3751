"""A store out of reach for longer than agent_ttl must not restart every unit.

No agent can refresh its presence key while the store is out of reach, so the keys
lapse. fleet took the departures that follow as machines dying, unscheduled their units
and scheduled them again as the agents registered anew (its flapping complaint);
fleetd holds them as a store outage instead (see ``flotilla.daemons.fleet.presence``).
Two ways a store goes away are covered:

- it stalls (SIGSTOP) and, when it resumes, expires every lapsed key in one go;
- requests cannot reach it (iptables drops packets to its client port) while it keeps
  running, expiring keys one by one and streaming the expiries to the watching engines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.process.kv_linearizable.nemesis import (
    install_chain,
    iptables,
    iptables_rules,
    remove_chain,
)

from .harness import BACKENDS, Cluster, Store, running_cluster, wait_for

UNIT = ("[Unit]\nDescription=outage test\n\n[Service]\nExecStart=/bin/sleep 1000\n\n"
        "[X-Fleet]\nConflicts=keep@*.service\n")
AGENT_TTL = 2.0
OUTAGE = 5.0  # longer than agent_ttl, so every presence key has lapsed when it ends
ATTEMPTS = 3


def stops(node) -> list[str]:
    try:
        calls = json.loads(node.state_file.read_text())["calls"]
    except (FileNotFoundError, ValueError):
        return []
    return [name for kind, name in calls if kind == "stop"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A store of each backend on an address of its own, for the iptables rule."""
    server = Store(request.param, "127.0.0.36").start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()


@contextlib.contextmanager
def requests_dropped(store: Store) -> Iterator[None]:
    """Drop packets to the store's client port (a chain of our own, always removed)."""
    chain = f"FLT-OUTAGE-{os.getpid()}"
    before = iptables_rules()
    try:
        install_chain(chain)
        result = iptables("-A", chain, "-p", "tcp", "-d", store.host, "--dport",
                          str(store.client_port), "-j", "DROP")
        assert result.returncode == 0, result.stderr
        yield
    finally:
        remove_chain(chain)
        assert iptables_rules() == before


def stall(store: Store) -> None:
    assert store.proc is not None
    store.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(OUTAGE)
    finally:
        store.proc.send_signal(signal.SIGCONT)


def cut_off(store: Store) -> None:
    with requests_dropped(store):
        time.sleep(OUTAGE)


def placed_units(cluster: Cluster) -> dict[str, str]:
    names = [cluster.write_unit(f"keep@{i}.service", UNIT) for i in range(3)]
    cluster.fleetctl("start", "--block-attempts=15", *names)
    wait_for(lambda: len(set(cluster.running().values())) == 3, 15,
             "three units on three machines")
    return cluster.running()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("outage", [stall, cut_off], ids=["stall", "cut-off"])
def test_units_stay_put_through_a_store_outage_longer_than_agent_ttl(store: Store,
                                                                    outage) -> None:
    with running_cluster(store, agent_ttl=f"{AGENT_TTL:.0f}s", interval=0.5) as cluster:
        placed = placed_units(cluster)

        def all_back() -> bool:
            listed = cluster.fleetctl("list-machines", "--no-legend", "--full").stdout
            return all(node.machine_id in listed for node in cluster.nodes)

        try:
            # A refresh already queued in a stalled store's socket may land before its
            # own expiry sweep when it resumes: try again until the keys do lapse.
            for _ in range(ATTEMPTS):
                outage(store)
                wait_for(all_back, 20, "every machine to register again")
                if "registering again" in "".join(node.log() for node in cluster.nodes):
                    break
            else:
                pytest.fail(f"{ATTEMPTS} outages did not expire the presence keys")
            watch_until = time.monotonic() + 2 * AGENT_TTL + 2
            while time.monotonic() < watch_until:
                assert cluster.running() == placed
                time.sleep(0.2)
            assert [stops(node) for node in cluster.nodes] == [[], [], []]
        finally:
            for node in cluster.nodes:  # shown only if the test failed
                print(f"--- fleetd {node.index}\n{node.log()}")
