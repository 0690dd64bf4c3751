"""Membership under load: 3 members grow to 5 and shrink back to 3, nothing acknowledged lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import Cluster, Load, check_history, request, wait_until


def conf(cluster: Cluster, op: dict) -> dict:
    """Send a membership change to the leader, following redirects."""

    def attempt() -> dict | None:
        lead = cluster.leader(among=[1, 2, 3])
        if lead is None:
            return None
        r = request(cluster.members[lead].client, op, timeout=10)
        return r if r.get("ok") else None

    return wait_until(attempt, 30, f"membership change {op}", interval=0.2)


@pytest.mark.timeout(120)
def test_grow_to_five_and_shrink_back_to_three_under_load(tmp_path: Path) -> None:
    c = Cluster(tmp_path, [1, 2, 3], snapshot_every=100)
    current = [1, 2, 3]
    load = Load(c, clients=4, targets=lambda: list(current))
    try:
        for i in (1, 2, 3):
            c.start(i)
        c.wait_leader()
        load.start()
        # Past a snapshot, so the joiners must be sent one (InstallSnapshot).
        load.wait_progress(150, 30)
        for new in (4, 5):
            m = c.define(new)
            c.start(new, join=True, peers=[*current, new])
            addr = f"{m.peer[0]}:{m.peer[1]}"
            conf(c, {"op": "add", "id": new, "addr": addr, "learner": True})
            # The learner catches up before it may vote.
            wait_until(lambda n=new: (c.status(n) or {}).get("applied", 0) > 50, 30,
                       f"learner {new} to catch up")
            conf(c, {"op": "add", "id": new, "addr": addr})
            current.append(new)
            load.wait_progress(30, 20)
        installed = [
            (c.status(n) or {}).get("stats", {}).get("snapshots_installed") for n in (4, 5)
        ]
        assert all(installed), f"joiners installed no snapshot: {installed}"
        voters = wait_until(
            lambda: all((c.status(i) or {}).get("voters") == [1, 2, 3, 4, 5] for i in current)
            and current, 20, "five voters everywhere")
        assert voters == [1, 2, 3, 4, 5]
        acked = load.acked_so_far()  # the load keeps running: check what was acked by now
        check_history(c.wait_converged(current), load, acked)

        for gone in (4, 5):
            current.remove(gone)
            conf(c, {"op": "remove", "id": gone})
            load.wait_progress(30, 20)
            c.kill(gone)
        wait_until(
            lambda: all((c.status(i) or {}).get("voters") == [1, 2, 3] for i in current),
            20, "three voters everywhere")
        load.wait_progress(30, 20)
    finally:
        load.stop()
        try:
            values = c.wait_converged([1, 2, 3])
        finally:
            c.close()
    check_history(values, load)
