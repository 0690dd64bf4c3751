"""A dead engine leader costs no more than any dead machine: no wait for its lease TTL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from .harness import Store, kill, on_every_store, running_cluster, wait_for

UNIT = "[Unit]\nDescription=job\n\n[Service]\nExecStart=/bin/sleep 1000\n"


def wall_clock(rfc3339: str) -> float:
    whole, _, fraction = rfc3339.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


@on_every_store
@pytest.mark.timeout(60)
def test_killed_leader_is_replaced_before_its_lease_would_expire(store: Store) -> None:
    # interval 2 s makes the lease TTL 10 s, far beyond agent_ttl (2 s): units moving
    # before the old lease's expiry prove the takeover did not wait for it.
    with running_cluster(store, agent_ttl="2s", interval=2.0) as cluster:
        lease_key = f"{cluster.prefix}lease/engine-leader"
        lease = wait_for(lambda: store.get(lease_key), 15, "an engine leader")["node"]
        leader_id = json.loads(lease["value"])["MachineID"]
        leader = next(n for n in cluster.nodes if n.machine_id == leader_id)
        names = [cluster.write_unit(f"job{i}.service", UNIT) for i in range(6)]
        cluster.fleetctl("start", "--block-attempts=15", *names)
        wait_for(lambda: len(cluster.running()) == 6, 20, "six units running")
        lost = set(leader.active_units())
        assert lost, "least-loaded placement gives the leader units too"
        survivors = {n.machine_id for n in cluster.nodes if n is not leader}
        lease = store.get(lease_key)["node"]  # renewed every interval: read just before
        assert json.loads(lease["value"])["MachineID"] == leader_id
        lease_expires = wall_clock(lease["expiration"])
        kill(leader)

        def moved() -> bool:
            # placements() reads live machines only: each unit started exactly once there.
            placements = cluster.placements()
            return placements.keys() == set(names) and all(
                len(machines) == 1 for machines in placements.values())

        wait_for(moved, 20, "the dead leader's units to run elsewhere", interval=0.05)
        moved_at = time.time()
        assert all(cluster.running()[unit] in survivors for unit in lost)
        assert moved_at < lease_expires, (
            f"units moved {moved_at - lease_expires:.1f}s after the old lease expired")
        holder = json.loads(store.get(lease_key)["node"]["value"])["MachineID"]
        assert holder != leader_id
        assert holder in {n.machine_id for n in cluster.nodes}
        assert "engine lease taken over from departed machine" in "".join(
            n.log() for n in cluster.nodes if n is not leader)
