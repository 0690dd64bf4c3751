"""KvStateMachine: the replicated half of a kvd member, driven entry by entry."""

from __future__ import annotations

import msgpack
import pytest
from flotilla.daemons.kv.errors import RAFT_INTERNAL, EtcdError
from flotilla.daemons.kv.replicated import (
    MEMBER_UPDATE_OP,
    PUBLISH_OP,
    KvStateMachine,
)
from flotilla.daemons.kv.store import Event
from flotilla.daemons.raft.messages import ConfChangeType

NOW = 1_700_000_000_000_000_000


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def put(key: str, value: str, **params: object) -> bytes:
    return pack({"op": "put", "key": key, "now": NOW, "params": {"value": value, **params}})


def test_entries_apply_in_log_order_and_the_last_write_wins() -> None:
    sm = KvStateMachine()
    first = sm.apply(2, put("/k", "one"))
    second = sm.apply(3, put("/k", "two"))
    assert isinstance(first, Event) and isinstance(second, Event)
    assert second.node.modified > first.node.modified
    got = sm.store.get("/k")
    assert got.node.value == "two"


def test_a_failed_command_is_an_etcd_error_result_and_the_store_moves_on() -> None:
    sm = KvStateMachine()
    sm.apply(2, put("/k", "v"))
    refused = sm.apply(3, put("/k", "again", prevExist=False))
    assert isinstance(refused, EtcdError) and refused.code == 105
    after = sm.apply(4, put("/other", "x"))
    assert isinstance(after, Event)


@pytest.mark.parametrize("data", [b"\xc1", pack([1, 2]), pack("set"), b""])
def test_undecodable_entries_become_raft_internal_errors(data: bytes) -> None:
    sm = KvStateMachine()
    sm.apply(2, put("/k", "v"))
    before = sm.store.index
    result = sm.apply(3, data)
    assert isinstance(result, EtcdError) and result.code == RAFT_INTERNAL
    assert "entry 3" in result.cause
    assert sm.store.index == before


def test_a_command_with_bad_field_types_is_refused_not_raised() -> None:
    sm = KvStateMachine()
    result = sm.apply(5, pack({"op": "put", "key": "/k", "params": "nope", "now": "soon"}))
    assert isinstance(result, EtcdError) and result.code == RAFT_INTERNAL
    assert result.cause.startswith("malformed command")
    assert sm.store.index == 0


def test_publish_records_name_and_client_urls_and_tells_listeners() -> None:
    calls: list[int] = []
    sm = KvStateMachine(on_members=lambda: calls.append(1), peers={5: ["http://a:2380"]})
    assert sm.apply(2, pack({"op": PUBLISH_OP, "id": 5, "name": "n5",
                             "clientURLs": ["http://a:2379"]})) is None
    assert sm.attrs[5].name == "n5" and sm.attrs[5].client_urls == ["http://a:2379"]
    assert calls == [1]
    assert sm.store.index == 0  # publishing is not a store write


def test_a_malformed_publish_changes_nothing() -> None:
    sm = KvStateMachine()
    assert sm.apply(2, pack({"op": PUBLISH_OP, "id": "x", "name": "n"})) is None
    assert sm.attrs == {}


def test_added_members_peer_urls_come_from_the_conf_change() -> None:
    seen: list[dict[int, list[str]]] = []
    sm = KvStateMachine(peers={1: ["http://h1:2380"]})
    sm.on_peers = lambda peers: seen.append(dict(peers))
    sm.apply_conf_change(7, ConfChangeType.ADD_VOTER, 9, pack({"peerURLs": ["http://h9:2380"]}))
    assert sm.peers == {1: ["http://h1:2380"], 9: ["http://h9:2380"]}
    assert seen[-1][9] == ["http://h9:2380"]


def test_a_conf_change_without_usable_urls_still_adds_the_member() -> None:
    sm = KvStateMachine()
    sm.apply_conf_change(7, ConfChangeType.ADD_VOTER, 9, b"\xc1garbage")
    assert sm.peers == {9: []}


def test_removal_forgets_urls_and_attributes_and_remembers_the_id() -> None:
    sm = KvStateMachine(peers={1: ["http://h1:2380"], 2: ["http://h2:2380"]})
    sm.apply(2, pack({"op": PUBLISH_OP, "id": 2, "name": "two", "clientURLs": []}))
    sm.apply_conf_change(3, ConfChangeType.REMOVE_NODE, 2, b"")
    assert 2 not in sm.peers and 2 not in sm.attrs
    assert sm.removed == {2}
    # A late publish from the removed member does not bring it back.
    sm.apply(4, pack({"op": PUBLISH_OP, "id": 2, "name": "two", "clientURLs": []}))
    assert 2 not in sm.attrs


def test_member_update_replaces_peer_urls_of_a_known_member_only() -> None:
    sm = KvStateMachine(peers={1: ["http://h1:2380"]})
    ok = sm.apply(5, pack({"op": MEMBER_UPDATE_OP, "id": 1, "peerURLs": ["http://new:2380"]}))
    assert ok is None and sm.peers[1] == ["http://new:2380"]
    unknown = sm.apply(6, pack({"op": MEMBER_UPDATE_OP, "id": 4, "peerURLs": ["http://x:1"]}))
    assert isinstance(unknown, EtcdError) and unknown.code == RAFT_INTERNAL
    assert unknown.cause == "entry 6: no member 4 to update"
    bad = sm.apply(7, pack({"op": MEMBER_UPDATE_OP, "id": 1, "peerURLs": "http://x:1"}))
    assert isinstance(bad, EtcdError) and bad.code == RAFT_INTERNAL
    assert bad.cause == "entry 7: bad member update: peerURLs: expected a list of strings"
    assert sm.peers == {1: ["http://new:2380"]}


def test_snapshot_restore_round_trip_keeps_store_and_membership() -> None:
    sm = KvStateMachine(peers={1: ["http://h1:2380"], 2: ["http://h2:2380"]})
    sm.apply(2, put("/dir/a", "1"))
    sm.apply(3, put("/b", "2", ttl=100))
    sm.apply(4, pack({"op": PUBLISH_OP, "id": 1, "name": "one", "clientURLs": ["http://c1"]}))
    sm.apply_conf_change(5, ConfChangeType.ADD_VOTER, 3, pack({"peerURLs": ["http://h3:2380"]}))
    sm.apply_conf_change(6, ConfChangeType.REMOVE_NODE, 2, b"")
    data = sm.snapshot()

    other = KvStateMachine(peers={99: ["http://stale:1"]})
    listened: list[int] = []
    other.on_members = lambda: listened.append(1)
    store_ref = other.store
    other.restore(data)
    assert other.store is store_ref  # the HTTP layer's reference stays valid
    assert other.store.get("/dir/a").node.value == "1"
    assert other.store.get("/b").node.expire == sm.store.get("/b").node.expire
    assert other.store.index == sm.store.index
    assert other.peers == {1: ["http://h1:2380"], 3: ["http://h3:2380"]}
    assert other.removed == {2}
    assert other.attrs[1].name == "one" and other.attrs[1].client_urls == ["http://c1"]
    assert listened == [1]


def test_restore_of_an_old_snapshot_without_peer_urls_keeps_the_seed() -> None:
    old = KvStateMachine()
    data = msgpack.unpackb(old.snapshot(), raw=False)
    del data["peers"], data["removed"]
    sm = KvStateMachine(peers={1: ["http://h1:2380"]})
    sm.restore(pack(data))
    assert sm.peers == {1: ["http://h1:2380"]}


@pytest.mark.parametrize("data, message", [
    (b"\xc1", "undecodable"),
    (pack({"version": 99}), "bad 'version'"),
    (pack({"version": 1, "store": {}, "peers": {"zz": ["u"]}}), "bad membership data"),
    (pack({"version": 1, "store": {}, "members": {"1": "x"}}), "bad membership data"),
])
def test_a_bad_snapshot_is_refused_and_changes_nothing(data: bytes, message: str) -> None:
    sm = KvStateMachine(peers={1: ["http://h1:2380"]})
    sm.apply(2, put("/k", "v"))
    with pytest.raises(ValueError, match=message):
        sm.restore(data)
    assert sm.store.get("/k").node.value == "v"
    assert sm.peers == {1: ["http://h1:2380"]}
