"""Membership requests a running cluster refuses or takes, joins that must fail, snapshots.

The expected answers are the ones Debian's etcd 3.4.23 gave (recorded in
tests/unit/kv/test_kv_membership.py); here they come from a live kvd cluster, which must
also be left unchanged by every refused request. The cluster takes a snapshot every 5
entries, so members added later reach new and restarted members through snapshots.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .harness import Cluster, Member, add_member, kvctl, wait_until

SNAPSHOT_EVERY = "5"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("kvmembers")),
                extra=["--snapshot-count", SNAPSHOT_EVERY])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def snapshot_of_members(m: Member) -> list[dict]:
    return sorted(m.members(), key=lambda x: x["id"])


BAD_ADDS = [
    ("application/x-www-form-urlencoded", b'{"peerURLs":["http://127.0.0.9:1"]}', 415,
     "Bad Content-Type application/x-www-form-urlencoded, accept application/json"),
    ("application/json", b"{bad", 400,
     "invalid character 'b' looking for beginning of object key string"),
    ("application/json", b"{}", 400, "no valid URLs given"),
    ("application/json", b'{"peerURLs":[]}', 400, "no valid URLs given"),
    ("application/json", b'{"peerURLs":"http://x:1"}', 400,
     "json: cannot unmarshal string into Go struct field .peerURLs of type []string"),
    ("application/json", b'{"peerURLs":[1]}', 400,
     "json: cannot unmarshal number into Go struct field .peerURLs of type string"),
    ("application/json", b"[1]", 400, 'json: cannot unmarshal array into Go value of type '
                                      'struct { PeerURLs []string "json:\\"peerURLs\\"" }'),
    ("application/json", b'{"peerURLs":["notaurl"]}', 400,
     "URL scheme must be http, https, unix, or unixs: notaurl"),
    ("application/json", b'{"peerURLs":["http://127.0.0.14"]}', 400,
     'URL address does not have the form "host:port": http://127.0.0.14'),
    ("application/json", b'{"peerURLs":["http://127.0.0.14:1/path"]}', 400,
     "URL must not contain a path: http://127.0.0.14:1/path"),
]


@pytest.mark.timeout(60)
def test_bad_add_bodies_get_etcds_errors_and_change_nothing(cluster: Cluster) -> None:
    target = cluster.followers()[0]
    before = snapshot_of_members(target)
    for content_type, body, status, message in BAD_ADDS:
        resp = requests.post(f"{target.url}/v2/members", data=body, timeout=10,
                             headers={"Content-Type": content_type})
        assert (resp.status_code, resp.json()) == (status, {"message": message}), body
        assert resp.content == json.dumps({"message": message},
                                          separators=(",", ":")).encode()  # no newline
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["X-Etcd-Cluster-Id"]
    existing = before[0]["peerURLs"][0]
    dup = add_member(target, existing)
    assert (dup.status_code, dup.json()) == (409, {"message": "membership: peerURL exists"})
    for m in cluster.alive():
        assert snapshot_of_members(m) == before


@pytest.mark.timeout(60)
def test_unknown_ids_and_methods_on_member_items(cluster: Cluster) -> None:
    m = cluster.members[0]
    for method, path, status, body in [
        ("DELETE", "/v2/members/abc", 404, {"message": "No such member: abc"}),
        ("DELETE", "/v2/members/zz", 404, {"message": "No such member: zz"}),
        ("GET", "/v2/members/abc", 404, {"message": "Not found"}),
    ]:
        resp = requests.request(method, m.url + path, timeout=10)
        assert (resp.status_code, resp.json()) == (status, body), path
    put = requests.put(f"{m.url}/v2/members/abc", json={"peerURLs": ["http://127.0.0.9:1"]},
                       timeout=10)
    assert (put.status_code, put.json()) == (404, {"message": "No such member: abc"})


@pytest.mark.timeout(60)
def test_update_then_remove_a_member_that_never_started(cluster: Cluster) -> None:
    via = cluster.leader()
    added = add_member(via, "http://127.0.0.29:2380")
    assert added.status_code == 201, added.text
    ident = added.json()["id"]
    moved = requests.put(f"{via.url}/v2/members/{ident}", timeout=10,
                         json={"peerURLs": ["http://127.0.0.29:2390"]})
    assert moved.status_code == 204 and moved.content == b"", moved.text
    for m in cluster.alive():
        wait_until(lambda m=m: {x["id"]: x["peerURLs"] for x in m.members()}.get(ident)
                   == ["http://127.0.0.29:2390"], 10, f"{m.name} to show the new peer URL")
    taken = requests.put(f"{via.url}/v2/members/{ident}", timeout=10,
                         json={"peerURLs": [cluster.members[0].peer_url]})
    assert (taken.status_code, taken.json()) == (409, {"message": "membership: peerURL exists"})
    gone = requests.delete(f"{cluster.followers()[0].url}/v2/members/{ident}", timeout=15)
    assert gone.status_code == 204, gone.text
    for m in cluster.alive():
        wait_until(lambda m=m: all(x["id"] != ident for x in m.members()), 10,
                   f"{m.name} to forget the removed member")
    after = requests.put(f"{via.url}/v2/members/{ident}", timeout=10,
                         json={"peerURLs": ["http://127.0.0.29:2391"]})
    assert (after.status_code, after.json()) == (500, {"message": "Internal Server Error"})


@pytest.mark.timeout(60)
def test_kvctl_member_errors_match_etcdctl(cluster: Cluster) -> None:
    ep = ["--endpoints", cluster.members[1].url]
    before = snapshot_of_members(cluster.members[1])
    cases = [
        (["member", "add", "x", cluster.members[0].peer_url], "membership: peerURL exists\n"),
        (["member", "add", "x", "notaurl"],
         "URL scheme must be http, https, unix, or unixs: notaurl\n"),
        (["member", "add"], "Provide a name and a single member peerURL\n"),
        (["member", "remove", "abc"], "Couldn't find a member in the cluster with an ID of abc.\n"),
        (["member", "remove"], "Provide a single member ID\n"),
    ]
    for args, stderr in cases:
        out = kvctl(*ep, *args)
        assert (out.returncode, out.stdout, out.stderr) == (1, "", stderr), args
    assert snapshot_of_members(cluster.members[1]) == before


@pytest.mark.timeout(60)
def test_joins_that_cannot_work_fail_naming_the_flag_and_write_nothing(
        cluster: Cluster) -> None:
    stranger = cluster.new_member()  # never added
    stranger.argv = cluster.join_argv(stranger)
    lonely = cluster.new_member()  # names only members nobody runs
    lonely.argv = cluster.argv(lonely, f"{lonely.name}={lonely.peer_url},"
                               "ghost=http://127.0.0.28:9", "existing")
    runs = []
    threads = [threading.Thread(target=lambda m=m: runs.append((m, m.start(), m.wait_exit(30))))
               for m in (stranger, lonely)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    codes = {m.name: code for m, _, code in runs}
    assert codes == {stranger.name: 2, lonely.name: 2}
    assert "--initial-cluster-state existing: no member with peer URLs" in stranger.log()
    assert f"kvctl member add {stranger.name}" in stranger.log()
    assert "--initial-cluster: no existing member reachable to join" in lonely.log()
    for m in (stranger, lonely):
        assert not m.data_dir.exists(), f"{m.name} wrote {list(m.data_dir.iterdir())}"
    cluster.members.remove(stranger)
    cluster.members.remove(lonely)


@pytest.mark.timeout(90)
def test_added_members_survive_snapshots_and_restarts(cluster: Cluster) -> None:
    leader = cluster.leader()
    for i in range(int(SNAPSHOT_EVERY) * 4):  # the leader's log is compacted past the add
        assert leader.put(f"/snap/k{i}", str(i)).status_code in (200, 201)
    joiner = cluster.new_member()
    added = add_member(leader, joiner.peer_url)
    assert added.status_code == 201, added.text
    for i in range(int(SNAPSHOT_EVERY) * 2):
        assert leader.put(f"/snap/j{i}", str(i)).status_code in (200, 201)
    joiner.argv = cluster.join_argv(joiner)
    joiner.start()
    cluster.wait_serving(joiner)
    assert joiner.get("/v2/keys/snap/k3", timeout=8).json()["node"]["value"] == "3"
    # It caught up from the leader's snapshot, which carried the membership with it.
    assert list((joiner.data_dir / "raft" / "snap").glob("*.snap"))
    assert {x["id"] for x in joiner.members()} >= {m.member_id() for m in cluster.members[:3]}
    # An original member restarted from its snapshot still knows the added member.
    original = next(m for m in cluster.followers() if m is not joiner)
    original.stop()
    original.start()
    cluster.wait_serving(original)
    expected = {joiner.peer_url}
    wait_until(lambda: {u for x in original.members() for u in x["peerURLs"]} >= expected,
               15, "the restarted member to list the added member's peer URL")
    ids = {x["id"] for x in joiner.members()}
    assert ids == {x["id"] for x in original.members()} == {m.member_id() for m in
                                                            cluster.alive()}
    assert original.get("/v2/keys/snap/j9", timeout=8).json()["node"]["value"] == "9"
