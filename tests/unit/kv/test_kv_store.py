"""The pure v2 store: operations, errors, TTLs, history, watchers, snapshots."""

from __future__ import annotations

import pytest
from flotilla.daemons.kv import errors as E
from flotilla.daemons.kv.errors import EtcdError
from flotilla.daemons.kv.render import event_json
from flotilla.daemons.kv.store import SECOND_NS, Event, Store
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = 1_800_000_000 * SECOND_NS


def put(store: Store, key: str, now: int = NOW, **params: object) -> Event | EtcdError:
    return store.apply({"op": "put", "key": key, "params": params, "now": now})


def ok(result: Event | EtcdError | None) -> Event:
    assert isinstance(result, Event), result
    return result


def err(result: Event | EtcdError | None) -> EtcdError:
    assert isinstance(result, EtcdError), result
    return result


def body(event: Event, now: int = NOW) -> str:
    return event_json(event, now)


def test_set_then_get_renders_like_etcd() -> None:
    store = Store()
    event = ok(put(store, "/message", value="Hello world"))
    assert event.created
    assert body(event) == ('{"action":"set","node":{"key":"/message","value":"Hello world",'
                           '"modifiedIndex":1,"createdIndex":1}}\n')
    replaced = ok(put(store, "/message", value="again"))
    assert not replaced.created
    assert body(replaced) == (
        '{"action":"set","node":{"key":"/message","value":"again","modifiedIndex":2,'
        '"createdIndex":2},"prevNode":{"key":"/message","value":"Hello world",'
        '"modifiedIndex":1,"createdIndex":1}}\n')
    got = store.get("/message")
    assert got.action == "get" and got.index == 2


def test_root_listing_has_no_key_and_hides_underscore_keys() -> None:
    store = Store()
    put(store, "/b", value="2")
    put(store, "/a", value="1")
    put(store, "/_hidden", value="h")
    listing = store.get("/", sort=True)
    assert body(listing) == (
        '{"action":"get","node":{"dir":true,"nodes":[{"key":"/a","value":"1",'
        '"modifiedIndex":2,"createdIndex":2},{"key":"/b","value":"2","modifiedIndex":1,'
        '"createdIndex":1}]}}\n')
    assert store.get("/_hidden").node.value == "h"  # type: ignore[union-attr]


def test_recursive_listing_and_implicit_directories() -> None:
    store = Store()
    put(store, "/d/e/f", value="x")
    top = store.get("/d")
    assert top.node.nodes[0].key == "/d/e" and top.node.nodes[0].nodes is None  # type: ignore
    deep = store.get("/d", recursive=True)
    assert deep.node.nodes[0].nodes[0].value == "x"  # type: ignore[union-attr,index]
    assert store.get("/d/e").node.created == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(("setup", "key", "params", "code", "cause"), [
    ([("/f", {"value": "1"})], "/f/child", {"value": "x"}, E.NOT_DIR, "/f"),
    ([("/d/x", {"value": "1"})], "/d", {"dir": True}, E.NOT_FILE, "/d"),
    ([("/d/x", {"value": "1"})], "/d", {"value": "v"}, E.NOT_FILE, "/d"),
    ([("/k", {"value": "1"})], "/k", {"value": "2", "prevExist": False}, E.NODE_EXIST, "/k"),
    ([], "/k", {"value": "2", "prevExist": True}, E.KEY_NOT_FOUND, "/k"),
    ([("/k", {"value": "a"})], "/k", {"value": "2", "prevValue": "b"}, E.TEST_FAILED,
     "[b != a]"),
    ([("/k", {"value": "a"})], "/k", {"value": "2", "prevIndex": 9}, E.TEST_FAILED,
     "[9 != 1]"),
    ([("/k", {"value": "a"})], "/k", {"value": "2", "prevIndex": 9, "prevValue": "b"},
     E.TEST_FAILED, "[b != a] [9 != 1]"),
    ([], "/", {"value": "x"}, E.ROOT_READ_ONLY, "/"),
    ([], "/missing", {"refresh": True, "ttl": 5}, E.KEY_NOT_FOUND, "/missing"),
])
def test_put_errors(setup: list, key: str, params: dict, code: int, cause: str) -> None:
    store = Store()
    for setup_key, setup_params in setup:
        ok(put(store, setup_key, **setup_params))
    before = store.snapshot()
    failure = err(put(store, key, **params))
    assert (failure.code, failure.cause, failure.index) == (code, cause, store.index)
    assert failure.message == E.MESSAGES[code]
    assert store.snapshot() == before  # a failed command changes nothing


def test_error_statuses_match_etcd() -> None:
    assert EtcdError(E.KEY_NOT_FOUND).status == 404
    assert EtcdError(E.TEST_FAILED).status == 412
    assert EtcdError(E.NODE_EXIST).status == 412
    assert EtcdError(E.NOT_FILE).status == 403
    assert EtcdError(E.DIR_NOT_EMPTY).status == 403
    assert EtcdError(E.EVENT_INDEX_CLEARED).status == 400
    assert EtcdError(E.RAFT_INTERNAL).status == 500
    assert EtcdError(E.INVALID_FIELD, "x").to_dict() == {
        "errorCode": 209, "message": "Invalid field", "cause": "x", "index": 0}
    assert "cause" not in EtcdError(E.NOT_FILE, "").to_dict()


def test_cas_and_update_and_create() -> None:
    store = Store()
    ok(put(store, "/k", value="a", prevExist=False))
    cas = ok(put(store, "/k", value="b", prevValue="a", prevIndex=1))
    assert cas.action == "compareAndSwap" and cas.node.created == 1  # type: ignore[union-attr]
    update = ok(put(store, "/k", value="c", prevExist=True))
    assert update.action == "update" and update.prev.value == "b"  # type: ignore[union-attr]
    with_exist_cas = ok(put(store, "/k", value="d", prevExist=True, prevValue="c"))
    assert with_exist_cas.action == "compareAndSwap"
    assert store.stats["compareAndSwapSuccess"] == 2 and store.stats["updateSuccess"] == 1


def test_delete_rules() -> None:
    store = Store()
    put(store, "/d/x", value="1")
    assert err(store.apply({"op": "delete", "key": "/d", "params": {}})).code == E.NOT_FILE
    assert err(store.apply({"op": "delete", "key": "/d",
                            "params": {"dir": True}})).code == E.DIR_NOT_EMPTY
    gone = ok(store.apply({"op": "delete", "key": "/d", "params": {"recursive": True}}))
    assert body(gone) == ('{"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":2,'
                          '"createdIndex":1},"prevNode":{"key":"/d","dir":true,'
                          '"modifiedIndex":1,"createdIndex":1}}\n')
    assert err(store.apply({"op": "delete", "key": "/", "params": {"recursive": True}})
               ).code == E.ROOT_READ_ONLY
    with pytest.raises(EtcdError) as missing:
        store.get("/d/x")
    assert missing.value.code == E.KEY_NOT_FOUND and missing.value.cause == "/d"


def test_compare_and_delete() -> None:
    store = Store()
    put(store, "/k", value="a")
    failed = err(store.apply({"op": "delete", "key": "/k", "params": {"prevValue": "z"}}))
    assert (failed.code, failed.cause, failed.index) == (E.TEST_FAILED, "[z != a]", 1)
    done = ok(store.apply({"op": "delete", "key": "/k", "params": {"prevIndex": 1}}))
    assert done.action == "compareAndDelete" and done.prev.value == "a"  # type: ignore


def test_in_order_keys_use_zero_padded_index() -> None:
    store = Store()
    put(store, "/other", value="x")
    first = ok(store.apply({"op": "post", "key": "/queue", "params": {"value": "j1"}}))
    second = ok(store.apply({"op": "post", "key": "/queue", "params": {"value": "j2"}}))
    assert first.key == "/queue/00000000000000000002"
    assert second.key == "/queue/00000000000000000003"
    assert first.action == "create" and first.created


def test_ttl_is_fixed_at_event_time_and_expiry_is_a_command() -> None:
    store = Store()
    created = ok(put(store, "/t", value="v", ttl=10))
    assert '"expiration":"2027-01-15T08:00:10Z","ttl":10' in body(created, NOW + 5 * SECOND_NS)
    later = store.get("/t")
    assert '"ttl":4' in body(later, NOW + 6 * SECOND_NS + 1)
    assert store.next_expiry() == NOW + 10 * SECOND_NS
    assert store.apply({"op": "expire", "now": NOW + 9 * SECOND_NS}) is None
    expired = ok(store.apply({"op": "expire", "now": NOW + 10 * SECOND_NS}))
    assert expired.action == "expire" and expired.prev.value == "v"  # type: ignore
    assert expired.node.modified == 2 and store.next_expiry() is None  # type: ignore
    assert store.stats["expireCount"] == 1


def test_update_without_ttl_makes_key_permanent_and_refresh_keeps_value() -> None:
    store = Store()
    put(store, "/t", value="v", ttl=10)
    refreshed = ok(put(store, "/t", ttl=100, refresh=True, prevExist=True))
    assert refreshed.node.value == "v" and refreshed.refresh  # type: ignore[union-attr]
    assert store.next_expiry() == NOW + 100 * SECOND_NS
    ok(put(store, "/t", value="w", prevExist=True))
    assert store.next_expiry() is None


def test_dir_ttl_expiry_notifies_watchers_inside() -> None:
    store = Store()
    put(store, "/dir", dir=True, ttl=1)
    put(store, "/dir/inner", value="x")
    seen: list[Event] = []
    store.watch("/dir/inner", False, False, 0, lambda e: seen.append(e) or True)
    store.apply({"op": "expire", "now": NOW + 2 * SECOND_NS})
    assert [e.action for e in seen] == ["expire"] and seen[0].key == "/dir"


def test_watch_from_history_and_live() -> None:
    store = Store()
    put(store, "/w", value="1")
    put(store, "/w", value="2")
    start = store.watch("/w", False, False, 2, lambda e: True)
    assert start.event is not None and start.event.node.value == "2"  # type: ignore
    assert start.start_index == 2
    seen: list[Event] = []
    live = store.watch("/w", False, False, 0, lambda e: seen.append(e) or True)
    assert live.watcher is not None and store.watcher_count == 1
    put(store, "/other", value="x")
    put(store, "/w", value="3")
    assert [e.node.value for e in seen] == ["3"]  # type: ignore[union-attr]
    assert store.watcher_count == 0


def test_recursive_watch_skips_hidden_children_live_but_not_in_history() -> None:
    store = Store()
    seen: list[Event] = []
    store.watch("/h", True, False, 0, lambda e: seen.append(e) or True)
    put(store, "/h/_x", value="hidden")
    assert seen == []
    put(store, "/h/y", value="shown")
    assert [e.key for e in seen] == ["/h/y"]
    replay = store.watch("/h", True, False, 1, lambda e: True)
    assert replay.event is not None and replay.event.key == "/h/_x"


def test_refresh_events_take_an_index_but_wake_nobody() -> None:
    store = Store()
    put(store, "/r", value="v", ttl=5)
    seen: list[Event] = []
    store.watch("/r", False, False, 0, lambda e: seen.append(e) or True)
    put(store, "/r", ttl=5, refresh=True, prevExist=True)
    assert seen == [] and store.index == 2
    replay = store.watch("/r", False, False, 2, lambda e: True)
    assert replay.watcher is not None  # the refresh at index 2 is skipped by scans
    put(store, "/r", value="new")
    assert seen and seen[0].node.value == "new"  # type: ignore[union-attr]


def test_stream_watcher_stays_and_slow_consumer_is_dropped() -> None:
    store = Store()
    got: list[int] = []
    store.watch("/s", False, True, 0, lambda e: got.append(e.index) or len(got) < 2)
    for value in "abc":
        put(store, "/s", value=value)
    assert got == [1, 2] and store.watcher_count == 0


def test_history_is_bounded_in_bytes_with_etcd_401() -> None:
    store = Store(history_bytes=5_000)
    for i in range(100):
        put(store, f"/k{i % 3}", value="x" * 50)
    assert 1 < store.start_index <= 100
    assert store.history_bytes <= 5_000
    oldest = store.start_index
    with pytest.raises(EtcdError) as cleared:
        store.watch("/k1", False, False, 1, lambda e: True)
    assert cleared.value.code == E.EVENT_INDEX_CLEARED
    assert cleared.value.cause == f"the requested history has been cleared [{oldest}/1]"
    assert cleared.value.index == 100
    assert store.watch("/k1", False, False, oldest, lambda e: True).event is not None


def test_snapshot_round_trip_preserves_tree_ttls_and_history() -> None:
    store = Store()
    put(store, "/a/b", value="1", ttl=50)
    put(store, "/c", value="2")
    store.apply({"op": "post", "key": "/q", "params": {"value": "j"}})
    copy = Store.restore(store.snapshot())
    assert copy.snapshot() == store.snapshot()
    assert copy.next_expiry() == store.next_expiry()
    assert body(copy.get("/", recursive=True, sort=True)) == \
        body(store.get("/", recursive=True, sort=True))
    with pytest.raises(ValueError, match="version"):
        Store.restore({"version": 99})


def test_unknown_or_malformed_command_is_an_error_not_a_crash() -> None:
    store = Store()
    assert err(store.apply({"op": "nope"})).code == E.RAFT_INTERNAL
    before = store.snapshot()
    bad = err(store.apply({"op": "put", "key": "/k", "params": {"ttl": "soon"}, "now": 1}))
    assert bad.code == E.RAFT_INTERNAL and "malformed command" in bad.cause
    assert err(store.apply({"op": "put", "key": "/k", "params": None, "now": "x"})
               ).code == E.RAFT_INTERNAL
    assert store.snapshot() == before


KEYS = st.sampled_from(["/a", "/b", "/d", "/d/x", "/d/y/z", "/_h", "/d/_h"])
COMMANDS = st.one_of(
    st.builds(lambda k, v, t: {"op": "put", "key": k,
                               "params": {"value": v, **({"ttl": t} if t else {})}},
              KEYS, st.sampled_from(["", "v", "w"]), st.sampled_from([None, 1, 5])),
    st.builds(lambda k: {"op": "put", "key": k, "params": {"dir": True}}, KEYS),
    st.builds(lambda k, r: {"op": "delete", "key": k, "params": {"recursive": r}},
              KEYS, st.booleans()),
    st.builds(lambda k, v: {"op": "put", "key": k, "params": {"value": "n", "prevValue": v}},
              KEYS, st.sampled_from(["v", "w"])),
    st.builds(lambda k: {"op": "post", "key": k, "params": {"value": "p"}}, KEYS),
    st.builds(lambda s: {"op": "expire"}, st.integers(0, 10)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(COMMANDS, st.integers(0, 3)), max_size=40))
def test_replicas_applying_the_same_commands_agree(steps: list) -> None:
    """Determinism: two stores fed the same commands end identical, snapshots included."""
    one, two = Store(), Store()
    clock = NOW
    for command, advance in steps:
        clock += advance * SECOND_NS
        stamped = {**command, "now": clock}
        first, second = one.apply(dict(stamped)), two.apply(dict(stamped))
        assert type(first) is type(second)
        if isinstance(first, EtcdError):
            assert first == second
    assert one.snapshot() == two.snapshot()
    restored = Store.restore(one.snapshot())
    assert restored.snapshot() == one.snapshot()
    assert one.index == len(one.history)


def test_stream_watch_replays_every_missed_event_then_goes_live() -> None:
    store = Store()
    for value in "abc":
        put(store, "/s/k", value=value)
    put(store, "/other", value="x")
    live: list[Event] = []
    start = store.watch("/s", True, True, 2, lambda e: live.append(e) or True)
    assert [e.node.value for e in start.backlog] == ["b", "c"]  # type: ignore[union-attr]
    assert start.watcher is not None and start.event is None
    put(store, "/s/k", value="d")
    assert [e.node.value for e in live] == ["d"]  # type: ignore[union-attr]
