"""The etcd client's decoding and the Mirror's event bookkeeping, without a store."""

from __future__ import annotations

import pytest
from flotilla.daemons.kvclient import (
    EtcdError,
    EventIndexCleared,
    KeyNotFound,
    KVClient,
    Mirror,
    Node,
    NodeExist,
    Response,
    TestFailed,
)


def test_error_replies_become_typed_exceptions() -> None:
    body = b'{"errorCode":100,"message":"Key not found","cause":"/a","index":7}'
    with pytest.raises(KeyNotFound) as caught:
        KVClient._decode(404, body, 7)
    error = caught.value
    assert (error.error_code, error.message, error.cause, error.index, error.status) == (
        100, "Key not found", "/a", 7, 404)
    for code, kind in ((101, TestFailed), (105, NodeExist), (401, EventIndexCleared)):
        with pytest.raises(kind):
            KVClient._decode(400, f'{{"errorCode":{code},"message":"m"}}'.encode(), 0)
    with pytest.raises(EtcdError) as other:
        KVClient._decode(500, b"proxy exploded", 0)
    assert other.value.error_code == 0 and "proxy exploded" in other.value.message


def test_success_reply_decodes_nodes_and_prev_node() -> None:
    body = (b'{"action":"compareAndSwap","node":{"key":"/d","dir":true,"nodes":['
            b'{"key":"/d/a","value":"1","modifiedIndex":3,"createdIndex":2},'
            b'{"key":"/d/e","dir":true,"nodes":[{"key":"/d/e/f","value":"2","ttl":5}]}]},'
            b'"prevNode":{"key":"/d","dir":true}}')
    reply = KVClient._decode(200, body, 9)
    assert reply.action == "compareAndSwap" and reply.etcd_index == 9
    assert [n.key for n in reply.node.leaves()] == ["/d/a", "/d/e/f"]
    assert reply.node.nodes[0].modified_index == 3 and reply.node.nodes[1].nodes[0].ttl == 5
    assert reply.prev_node is not None and reply.prev_node.dir


def test_endpoints_are_required() -> None:
    with pytest.raises(ValueError, match="endpoints"):
        KVClient([])
    assert KVClient("http://a:1/,http://b:2").endpoints == ["http://a:1", "http://b:2"]


def event(action: str, key: str, index: int, value: str | None = "v", dir: bool = False):
    return Response(action, Node(key=key, value=value, modified_index=index, dir=dir), None,
                    index)


def test_mirror_applies_sets_deletes_expiry_and_directory_deletes() -> None:
    mirror = Mirror(KVClient("http://x:1"), "/p", lambda c, f: None)
    assert mirror._apply(event("set", "/p/a/x", 1)) == {"/p/a/x": mirror.nodes["/p/a/x"]}
    mirror._apply(event("create", "/p/a/y", 2))
    mirror._apply(event("set", "/p/b", 3))
    assert mirror._apply(event("expire", "/p/b", 4, None)) == {"/p/b": None}
    assert mirror._apply(event("delete", "/p/a", 5, None, dir=True)) == {
        "/p/a/x": None, "/p/a/y": None}
    assert mirror.nodes == {}


def test_mirror_ignores_events_older_than_local_writes() -> None:
    mirror = Mirror(KVClient("http://x:1"), "/p", lambda c, f: None)
    mirror.local_set("/p/t", "m1", 10)
    assert mirror._apply(event("set", "/p/t", 9, "old")) == {}
    assert mirror.nodes["/p/t"].value == "m1"
    mirror.local_delete("/p/t", 12)
    assert mirror._apply(event("set", "/p/t", 10, "m1")) == {}  # our own, already applied
    assert "/p/t" not in mirror.nodes
    assert mirror._apply(event("set", "/p/t", 13, "m2")) != {}
    assert mirror.nodes["/p/t"].value == "m2"
