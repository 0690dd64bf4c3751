"""A kvd started alone is a one-member Raft cluster: it grows, converts old data dirs,
and etcd's ``--strict-reconfig-check`` guards its membership changes.

* grow 1 -> 2 over HTTP and 2 -> 3 with ``kvctl member add``; data written before and
  after each step reads the same everywhere with linearizable reads; an add that would
  leave too few started members is refused; the original member restarts and serves;
* a data dir written by the old single-node format (snapshot + command log) is taken
  over: every key and the store index carry over, and later writes continue them;
* a remove that would leave fewer connected members than quorum gets etcd's 500 and
  changes nothing; ``--strict-reconfig-check=false`` lets the same remove through;
* lone members started without peer flags share the default peer port's host.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flotilla.daemons.kv.proposer import LOG_NAME, SNAPSHOT_NAME, LocalProposer

from tests.process.kv.harness import start_kvd

from .harness import Cluster, Member, add_member, etcd_lines, kvctl, put_until_ok, wait_until

INTERNAL = {"message": "Internal Server Error"}


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[list[Cluster]]:
    """Clusters made by a test; every process is stopped even when the test fails."""
    made: list[Cluster] = []
    yield made
    for cluster in made:
        cluster.stop()


def read(m: Member, key: str) -> str:
    resp = m.get(f"/v2/keys{key}", timeout=8.0)  # no quorum=false: linearizable
    assert resp.status_code == 200, (m.name, resp.text)
    return str(resp.json()["node"]["value"])


def names(m: Member) -> list[str]:
    return sorted(x["name"] for x in m.members())


def published(m: Member, name: str) -> bool:
    return name in names(m)


@pytest.mark.timeout(90)
def test_a_lone_member_grows_to_three_and_its_data_follows(
        tmp_path: Path, workdir: list[Cluster]) -> None:
    cluster = Cluster(tmp_path, size=1)
    workdir.append(cluster)
    cluster.start()
    m0 = cluster.members[0]
    assert m0.state() == "StateLeader"
    assert m0.put("/single/before", "0").status_code == 201

    # 1 -> 2 over HTTP.
    m1 = cluster.new_member()
    resp = add_member(m0, m1.peer_url)
    assert resp.status_code == 201, resp.text
    m1_id = resp.json()["id"]

    # Strict check: m1 has not started, so a third voter would leave 1 started of 3.
    m2 = cluster.new_member()
    refused = add_member(m0, m2.peer_url)
    assert (refused.status_code, refused.json()) == (500, INTERNAL)
    assert "not enough started members" in m0.log()
    assert len(m0.members()) == 2

    m1.argv = cluster.join_argv(m1)
    m1.start()
    cluster.wait_serving(m1)
    assert m1.member_id() == m1_id
    assert read(m1, "/single/before") == "0"
    assert m1.put("/single/two", "2").status_code == 201
    assert read(m0, "/single/two") == "2"
    wait_until(lambda: published(m0, "m1"), 15, "m1 to publish its name")

    # 2 -> 3 with kvctl; the new member starts from the ETCD_* lines it printed.
    out = kvctl("--endpoints", m1.url, "member", "add", "m2", m2.peer_url)
    assert out.returncode == 0, out.stderr
    env = etcd_lines(out.stdout)
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert sorted(env["ETCD_INITIAL_CLUSTER"].split(",")) == sorted(
        f"{m.name}={m.peer_url}" for m in (m0, m1, m2))
    m2.env = env
    m2.argv = [sys.executable, "-m", "flotilla.daemons.kv", "--data-dir", str(m2.data_dir),
               "--listen-client-urls", m2.url, "--advertise-client-urls", m2.url,
               "--listen-peer-urls", m2.peer_url, "--initial-advertise-peer-urls",
               m2.peer_url, "--dbus", "none"]
    m2.start()
    cluster.wait_serving(m2)
    assert m2.put("/single/three", "3").status_code == 201
    for m in (m0, m1, m2):
        assert [read(m, k) for k in ("/single/before", "/single/two", "/single/three")] \
            == ["0", "2", "3"], m.name
    wait_until(lambda: names(m0) == ["m0", "m1", "m2"], 15, "all three names listed")

    # The original member restarts from its data dir and is a voter like the others.
    m0.stop()
    put_until_ok(m1, "/single/while-down", "4")  # m0 led: the others elect first
    m0.start()
    cluster.wait_serving(m0)
    assert read(m0, "/single/while-down") == "4"
    assert m0.put("/single/after-restart", "5").status_code == 201
    for m in (m1, m2):
        assert read(m, "/single/after-restart") == "5"
    assert len({m.get("/v2/members").headers["X-Etcd-Cluster-Id"] for m in (m0, m1, m2)}) == 1


async def _write_old_format(data_dir: Path, count: int) -> int:
    proposer = LocalProposer(data_dir)
    proposer.start()
    for i in range(count):
        await proposer.propose({"op": "put", "key": f"/old/k{i}", "params": {"value": f"v{i}"}})
    await proposer.propose({"op": "put", "key": "/old/dir", "params": {"dir": "true"}})
    await proposer.close()
    return proposer.store.index


@pytest.mark.timeout(60)
def test_an_old_single_node_data_dir_is_taken_over(tmp_path: Path,
                                                  workdir: list[Cluster]) -> None:
    cluster = Cluster(tmp_path, size=1)
    workdir.append(cluster)
    m0 = cluster.members[0]
    index = asyncio.run(_write_old_format(m0.data_dir, 30))
    assert index == 31
    cluster.start()
    assert "converted" in m0.log() and "one-member Raft cluster" in m0.log()
    assert not (m0.data_dir / SNAPSHOT_NAME).exists()
    assert not (m0.data_dir / LOG_NAME).exists()
    resp = m0.get("/v2/keys/old/k29")
    assert resp.json()["node"]["value"] == "v29"
    assert resp.headers["X-Etcd-Index"] == "31"
    assert m0.get("/v2/keys/old/dir").json()["node"]["dir"] is True
    new = m0.put("/old/next", "n")
    assert new.status_code == 201 and new.json()["node"]["modifiedIndex"] == 32
    # A second start reads the Raft data; nothing is converted again.
    m0.stop()
    m0.start()
    cluster.wait_serving(m0)
    assert m0.log().count("converted") == 1
    assert [read(m0, "/old/k0"), read(m0, "/old/next")] == ["v0", "n"]


@pytest.mark.timeout(75)
def test_strict_reconfig_check_refuses_a_remove_that_loses_quorum_unless_turned_off(
        tmp_path: Path, workdir: list[Cluster]) -> None:
    cluster = Cluster(tmp_path, size=3)
    workdir.append(cluster)
    cluster.start()
    m0, m1, m2 = cluster.members
    for m in (m0, m1, m2):
        wait_until(lambda m=m: published(m0, m.name), 15, f"{m.name} to publish")
    ids = {m.name: m.member_id() for m in (m0, m1, m2)}
    m2.kill()

    # Removing m1 would leave {m0, m2} with only m0 up: fewer than a quorum of two.
    resp = requests.delete(f"{m0.url}/v2/members/{ids['m1']}", timeout=15)
    assert (resp.status_code, resp.json()) == (500, INTERNAL)
    assert "etcdserver: unhealthy cluster" in m0.log()
    assert len(m0.members()) == 3 and m1.alive

    # The same remove with the check turned off goes through.
    m0.stop()
    m0.argv = [*m0.argv, "--strict-reconfig-check=false"]
    m0.start()
    cluster.wait_serving(m0)

    def removed() -> bool:
        answer = requests.delete(f"{m0.url}/v2/members/{ids['m1']}", timeout=15)
        # 500: no leader yet; 410: an earlier attempt that timed out went through
        assert answer.status_code in (204, 410, 500), answer.text
        return answer.status_code in (204, 410)
    wait_until(removed, 30, "the remove to go through", tolerate=(requests.RequestException,))
    assert m1.wait_exit(30) == 1


@pytest.mark.timeout(60)
def test_lone_members_on_the_default_peer_url_share_a_host(tmp_path: Path) -> None:
    """Several lone kvds started without peer flags all serve; one port 2380 at most."""
    servers = []
    try:
        for i in range(2):
            workdir = tmp_path / f"s{i}"
            workdir.mkdir()
            servers.append(start_kvd(workdir, f"127.0.0.{41 + i}", "--dbus", "none"))
        for i, server in enumerate(servers):
            resp = requests.put(f"{server.url}/v2/keys/lone", data={"value": str(i)}, timeout=8)
            assert resp.status_code == 201, resp.text
        logs = [server.log() for server in servers]
        assert sum("is taken; serving alone on another port" in log for log in logs) >= 1
    finally:
        for server in servers:
            server.stop()
