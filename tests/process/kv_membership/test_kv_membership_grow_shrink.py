"""A kvd cluster grows from 3 to 5 members and shrinks again, and keeps serving.

Members are added over HTTP and with ``kvctl member add`` (whose ETCD_* lines start the
new member), started with ``--initial-cluster-state existing``, restarted with their
data, then a follower and the leader are removed; removed processes exit.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .harness import (
    Cluster,
    Member,
    add_member,
    etcd_lines,
    kvctl,
    put_until_ok,
    wait_until,
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def listed(m: Member) -> dict[str, dict]:
    return {x["id"]: x for x in m.members()}


def read(m: Member, key: str) -> str:
    resp = m.get(f"/v2/keys{key}", timeout=8.0)  # no quorum=false: linearizable
    assert resp.status_code == 200, resp.text
    return str(resp.json()["node"]["value"])


@pytest.mark.timeout(150)
def test_cluster_grows_by_http_and_kvctl_then_loses_a_follower_and_its_leader(
        cluster: Cluster) -> None:
    first_follower = cluster.followers()[0]
    assert first_follower.put("/grow/before", "1").status_code == 201

    # 1. Add over HTTP through a follower; etcd's 201 answer; everybody lists it.
    m3 = cluster.new_member()
    resp = add_member(first_follower, m3.peer_url)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"id", "name", "peerURLs", "clientURLs"}
    assert body["name"] == "" and body["peerURLs"] == [m3.peer_url] and body["clientURLs"] == []
    new_id = body["id"]
    int(new_id, 16)
    for m in cluster.alive():
        wait_until(lambda m=m: new_id in listed(m), 10, f"{m.name} to list the new member")
    assert listed(cluster.leader())[new_id]["name"] == ""  # not started yet

    # 2. Start it as a joining member: it learns the data, then serves new writes.
    m3.argv = cluster.join_argv(m3)
    m3.start()
    cluster.wait_serving(m3)
    assert m3.member_id() == new_id
    cluster_id = first_follower.get("/v2/members").headers["X-Etcd-Cluster-Id"]
    assert m3.get("/v2/members").headers["X-Etcd-Cluster-Id"] == cluster_id
    assert read(m3, "/grow/before") == "1"
    assert cluster.leader().put("/grow/after", "2").status_code == 201
    assert read(m3, "/grow/after") == "2"
    wait_until(lambda: listed(cluster.members[0]).get(new_id, {}).get("name") == "m3", 10,
               "m3 to publish its name")
    assert listed(cluster.members[0])[new_id]["clientURLs"] == [m3.url]

    # 3. Add with kvctl; start the member from the ETCD_* lines it printed.
    m4 = cluster.new_member()
    out = kvctl("--endpoints", m3.url, "member", "add", "m4", m4.peer_url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Added member named m4 with ID ")
    assert lines[0].endswith(" to cluster") and lines[1] == ""
    m4_id = lines[0].split()[6]
    env = etcd_lines(out.stdout)
    assert env["ETCD_NAME"] == "m4" and env["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert sorted(env["ETCD_INITIAL_CLUSTER"].split(",")) == sorted(
        f"{m.name}={m.peer_url}" for m in cluster.members)
    m4.env = env
    m4.argv = [sys.executable, "-m", "flotilla.daemons.kv", "--data-dir", str(m4.data_dir),
               "--listen-client-urls", m4.url, "--advertise-client-urls", m4.url,
               "--listen-peer-urls", m4.peer_url, "--initial-advertise-peer-urls", m4.peer_url]
    m4.start()
    cluster.wait_serving(m4)
    assert m4.member_id() == m4_id
    assert read(m4, "/grow/after") == "2"
    listing = kvctl("--endpoints", m4.url, "member", "list")
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 5, listing.stdout
    assert f"{m4_id}: name=m4 peerURLs={m4.peer_url} clientURLs={m4.url} isLeader=" \
        in listing.stdout

    # 4. A joined member restarts from its data dir: same id, no second join (the
    #    flags now name no member it could ask, so a join would fail).
    m3.stop()
    m3.argv = cluster.argv(m3, f"{m3.name}={m3.peer_url},ghost=http://127.0.0.28:9",
                           "existing")
    m3.start()
    cluster.wait_serving(m3)
    assert m3.member_id() == new_id
    assert len(listed(m3)) == 5
    assert read(m3, "/grow/after") == "2"

    # 5. Remove a follower with kvctl: it stops serving and exits with etcd's message.
    victim = next(m for m in cluster.followers() if m not in (m3, m4))
    victim_id = victim.member_id()
    out = kvctl("--endpoints", m4.url, "member", "remove", victim_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"Removed member {victim_id} from cluster\n"
    assert victim.wait_exit(30) == 1
    assert "the member has been permanently removed from the cluster" in victim.log()
    assert victim_id not in listed(m4)
    victim.start()  # restarted with its data (Restart=always): it exits again
    assert victim.wait_exit(30) == 1
    assert victim_id not in listed(m4)

    # 6. Remove the leader over HTTP: 204, it exits, the rest elect and keep serving.
    leader = cluster.leader()
    leader_id = leader.member_id()
    survivor = next(m for m in cluster.alive() if m is not leader)
    resp = requests.delete(f"{survivor.url}/v2/members/{leader_id}", timeout=15)
    assert resp.status_code == 204, resp.text
    assert resp.content == b""
    assert leader.wait_exit(30) == 1
    new_leader = cluster.leader()
    assert new_leader is not leader
    put_until_ok(survivor, "/grow/last", "3")
    for m in cluster.alive():
        assert read(m, "/grow/last") == "3"
        assert set(listed(m)) == {x.member_id() for x in cluster.alive()}

    # 7. A second removal of the same id is 410 Gone, like etcd.
    again = requests.delete(f"{survivor.url}/v2/members/{leader_id}", timeout=15)
    assert again.status_code == 410
    assert again.json() == {"message": f"Member permanently removed: {leader_id}"}
