"""A three-member kvd cluster serves the v2 API consistently from every member."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .harness import Cluster, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("kvcluster")))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.mark.timeout(60)
def test_write_on_one_member_reads_back_linearizably_from_the_others(cluster: Cluster) -> None:
    first, *others = cluster.members
    resp = first.put("/basic/a", "one")
    assert resp.status_code == 201, resp.text
    index = resp.json()["node"]["modifiedIndex"]
    for m in others:
        got = m.get("/v2/keys/basic/a")  # no parameter: linearizable (ReadIndex)
        assert got.status_code == 200, got.text
        assert got.json()["node"] == {"key": "/basic/a", "value": "one",
                                      "modifiedIndex": index, "createdIndex": index}
        assert int(got.headers["X-Etcd-Index"]) >= index
        assert int(got.headers["X-Raft-Index"]) > 0 and int(got.headers["X-Raft-Term"]) > 0


@pytest.mark.timeout(60)
def test_write_sent_to_a_follower_is_served(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    resp = follower.put("/basic/via-follower", "f")
    assert resp.status_code == 201, resp.text
    assert resp.json()["action"] == "set"
    cas = follower.put("/basic/via-follower", "g", prevValue="f")
    assert cas.status_code == 200 and cas.json()["action"] == "compareAndSwap"
    stale = follower.put("/basic/via-follower", "h", prevValue="f")
    assert stale.status_code == 412 and stale.json()["errorCode"] == 101
    for m in cluster.members:
        assert m.get("/v2/keys/basic/via-follower").json()["node"]["value"] == "g"


@pytest.mark.timeout(60)
def test_watch_on_one_member_sees_a_write_made_on_another(cluster: Cluster) -> None:
    watcher_member, writer_member = cluster.members[2], cluster.members[0]
    head = watcher_member.get("/v2/keys/", quorum="false")
    after = int(head.headers["X-Etcd-Index"]) + 1
    result: dict[str, requests.Response] = {}

    def watch() -> None:
        result["resp"] = watcher_member.get("/v2/keys/basic/watched", timeout=15.0,
                                            wait="true", waitIndex=str(after))

    thread = threading.Thread(target=watch)
    thread.start()
    assert writer_member.put("/basic/watched", "seen").status_code == 201
    thread.join(20)
    assert not thread.is_alive()
    body = result["resp"].json()
    assert body["action"] == "set"
    assert body["node"]["key"] == "/basic/watched" and body["node"]["value"] == "seen"


@pytest.mark.timeout(60)
def test_ttl_key_set_on_one_member_expires_on_all(cluster: Cluster) -> None:
    setter = cluster.members[1]
    resp = setter.put("/basic/ttl", "short", ttl="1")
    assert resp.status_code == 201 and resp.json()["node"]["ttl"] == 1
    for m in cluster.members:
        assert m.get("/v2/keys/basic/ttl").status_code == 200

    def gone_everywhere() -> bool:
        return all(m.get("/v2/keys/basic/ttl", quorum="false").status_code == 404
                   for m in cluster.members)

    wait_until(gone_everywhere, 10.0, "the TTL key to expire on every member", interval=0.2)
    # the expiry is one replicated event at the same index on every member
    indexes = {m.get("/v2/keys/basic/ttl").json()["index"] for m in cluster.members}
    assert len(indexes) == 1


@pytest.mark.timeout(60)
def test_members_machines_and_leader_stats_show_the_raft_membership(cluster: Cluster) -> None:
    want = {(m.name, m.peer_url, m.url) for m in cluster.members}

    def listed() -> bool:
        got = cluster.members[0].get("/v2/members").json()["members"]
        return {(g["name"], g["peerURLs"][0], (g["clientURLs"] or [""])[0])
                for g in got} == want

    wait_until(listed, 10.0, "every member to publish its name and client URLs")
    machines = cluster.members[1].get("/v2/machines").text.split(", ")
    assert sorted(machines) == sorted(m.url for m in cluster.members)
    leader = cluster.leader()
    stats = leader.get("/v2/stats/leader")
    assert stats.status_code == 200
    assert len(stats.json()["followers"]) == 2
    for f in cluster.followers():
        assert f.get("/v2/stats/leader").status_code == 403
    for m in cluster.members:
        assert m.get("/v2/members/leader").json()["name"] == leader.name

