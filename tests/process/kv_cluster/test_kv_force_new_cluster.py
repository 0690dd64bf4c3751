"""Disaster recovery: a cluster that lost two of three members for good is brought back
from the survivor's data with ``--force-new-cluster``, as etcd operators do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .harness import Cluster, Member, wait_until

KEYS = 60


def _leader_alone(member: Member) -> bool:
    return member.state() == "StateLeader"


def _write_all(leader: Member, prefix: str, count: int) -> set[str]:
    acked = set()
    for n in range(count):
        key = f"{prefix}/k{n}"
        if leader.put(key, f"v{n}").status_code in (200, 201):
            acked.add(key)
    assert len(acked) == count
    return acked


def _listed(member: Member, prefix: str) -> set[str]:
    resp = member.get(f"/v2/keys{prefix}", recursive="true")
    assert resp.status_code == 200, resp.text
    return {node["key"] for node in resp.json()["node"]["nodes"]}


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path, "--snapshot-count", "25")  # snapshots and a log to rewrite
    try:
        c.start()
        yield c
    finally:
        c.stop()
        print(c.logs())


def test_the_survivor_of_a_lost_majority_becomes_a_one_member_cluster(cluster: Cluster) -> None:
    leader = cluster.leader()
    acked = _write_all(leader, "/fnc", KEYS)
    survivor = cluster.followers()[0]
    wait_until(lambda: len(_listed(survivor, "/fnc")) == KEYS, 10.0, "the survivor's copy")
    lost = [m for m in cluster.members if m is not survivor]
    for member in lost:
        member.kill()
    # Without a majority nothing commits: the write is refused or times out.
    try:
        refused = survivor.put("/fnc/after-loss", "x", timeout=8.0).status_code not in (200, 201)
    except requests.RequestException:
        refused = True
    assert refused, "a lone member of three committed a write"
    survivor.kill()

    survivor.argv.append("--force-new-cluster")
    survivor.start()
    cluster.wait_serving(survivor)
    wait_until(lambda: _leader_alone(survivor), 10.0, "the survivor to lead itself")
    assert acked <= _listed(survivor, "/fnc"), "an acknowledged write was lost"
    assert survivor.put("/fnc/recovered", "yes").status_code == 201
    members = survivor.get("/v2/members").json()["members"]
    assert [m["name"] for m in members] == [survivor.name]
    assert "forced a new one-member cluster" in survivor.log()

    # Left on, the flag finds nothing more to remove; the data and membership stay.
    survivor.stop()
    survivor.start()
    cluster.wait_serving(survivor)
    wait_until(lambda: _leader_alone(survivor), 10.0, "the survivor to lead after a restart")
    assert survivor.get("/v2/keys/fnc/recovered").json()["node"]["value"] == "yes"
    assert len(survivor.get("/v2/members").json()["members"]) == 1


def test_force_new_cluster_on_an_empty_data_dir_starts_a_new_member(tmp_path: Path) -> None:
    """Like etcd: with nothing to recover the flag changes nothing."""
    c = Cluster(tmp_path)
    lone = c.members[0]
    lone.argv = [sys.executable, "-m", "flotilla.daemons.kv", "--name", "solo",
                 "--data-dir", str(lone.data_dir), "--listen-client-urls", lone.url,
                 "--advertise-client-urls", lone.url, "--listen-peer-urls", lone.peer_url,
                 "--force-new-cluster"]
    try:
        lone.start()
        c.wait_serving(lone)
        wait_until(lambda: _leader_alone(lone), 10.0, "a lone leader")
        assert lone.put("/x", "1").status_code == 201
    finally:
        lone.stop()


def test_bad_value_is_refused_naming_the_flag(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flotilla.daemons.kv", "--data-dir", str(tmp_path / "d"),
         "--force-new-cluster=maybe"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--force-new-cluster: 'maybe' is not a boolean" in result.stderr
    assert not (tmp_path / "d").exists()
