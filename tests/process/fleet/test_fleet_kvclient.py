"""The shared etcd v2 client against kvd and real etcd: conditional writes, TTLs, watches,
errors. Every test runs on both stores: the client must work the same against either."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from flotilla.daemons.kvclient import (
    ClusterUnavailable,
    EtcdError,
    KeyNotFound,
    KVClient,
    Mirror,
    NodeExist,
    NotFile,
    TestFailed,
)

from tests.conditions import async_wait_until

from .harness import Store, free_port, on_every_store


def run(coro):
    return asyncio.run(coro)


@on_every_store
@pytest.mark.timeout(30)
def test_conditional_writes_and_typed_errors(store: Store) -> None:
    async def body() -> None:
        async with KVClient([store.url]) as kv:
            created = await kv.create("/kvt/a", "1")
            assert created.action == "create" and created.node.value == "1"
            with pytest.raises(NodeExist) as exists:
                await kv.create("/kvt/a", "2")
            assert exists.value.error_code == 105 and exists.value.cause == "/kvt/a"
            assert exists.value.index >= created.node.modified_index
            with pytest.raises(KeyNotFound) as missing:
                await kv.update("/kvt/none", "x")
            assert missing.value.error_code == 100 and missing.value.message == "Key not found"
            swapped = await kv.compare_and_swap("/kvt/a", "3", prev_value="1")
            assert swapped.prev_node is not None and swapped.prev_node.value == "1"
            with pytest.raises(TestFailed) as failed:
                await kv.compare_and_swap("/kvt/a", "4", prev_value="1")
            assert failed.value.error_code == 101 and "[1 != 3]" in failed.value.cause
            index = swapped.node.modified_index
            await kv.compare_and_swap("/kvt/a", "5", prev_index=index)
            with pytest.raises(TestFailed):
                await kv.compare_and_delete("/kvt/a", prev_index=index)
            await kv.compare_and_delete("/kvt/a", prev_value="5")
            with pytest.raises(KeyNotFound):
                await kv.get("/kvt/a")
            await kv.set("/kvt/dir/x", "1")
            with pytest.raises(NotFile):
                await kv.delete("/kvt/dir")
            with pytest.raises(EtcdError) as over_dir:
                await kv.set("/kvt/dir", "value-over-dir")
            assert over_dir.value.error_code == 102 and over_dir.value.message == "Not a file"
            await kv.set("/kvt/dir/y/z", "2")
            tree = await kv.get("/kvt/dir", recursive=True, sort=True)
            assert [n.key for n in tree.node.leaves()] == ["/kvt/dir/x", "/kvt/dir/y/z"]
            assert tree.etcd_index >= tree.node.modified_index
            await kv.delete("/kvt", recursive=True)

    run(body())


@on_every_store
@pytest.mark.timeout(30)
def test_ttl_refresh_keeps_value_and_expiry_removes(store: Store) -> None:
    async def body() -> None:
        async with KVClient([store.url]) as kv:
            await kv.set("/kvt2/lease", "holder", ttl=1)
            reply = await kv.get("/kvt2/lease")
            assert reply.node.ttl is not None and reply.node.ttl <= 1
            refreshed = await kv.refresh("/kvt2/lease", 30)
            assert refreshed.node.value == "holder" and refreshed.node.ttl == 30
            await kv.set("/kvt2/short", "x", ttl=1)

            async def expired() -> bool:
                try:
                    await kv.get("/kvt2/short")
                except KeyNotFound:
                    return True
                return False

            await async_wait_until(expired, 5, "the 1 s TTL key to expire")
            assert (await kv.get("/kvt2/lease")).node.value == "holder"
            with pytest.raises(KeyNotFound):
                await kv.refresh("/kvt2/none", 5)

    run(body())


@on_every_store
@pytest.mark.timeout(30)
def test_watch_from_index_sees_each_change(store: Store) -> None:
    async def body() -> None:
        async with KVClient([store.url]) as kv:
            first = await kv.set("/kvt3/k", "0")
            for value in ("1", "2"):
                await kv.set("/kvt3/k", value)
            seen = []
            async for event in kv.watch("/kvt3", after_index=first.node.modified_index,
                                        recursive=True):
                seen.append((event.action, event.node.value))
                if len(seen) == 2:
                    break
            assert seen == [("set", "1"), ("set", "2")]
            # A wait without an index sees the first change after the store registered
            # it: the store's watcher count says when that has happened.
            before = await asyncio.to_thread(watchers, store)
            waiter = asyncio.create_task(kv.wait("/kvt3/k"))
            await async_wait_until(
                lambda: _more_watchers(store, before), 5, "the store to hold the new watch")
            await kv.delete("/kvt3/k")
            event = await asyncio.wait_for(waiter, 5)
            assert event.action == "delete" and event.prev_node.value == "2"

    run(body())


@on_every_store
@pytest.mark.timeout(60)
def test_mirror_relists_after_outdated_index_and_stays_current(store: Store) -> None:
    async def body() -> None:
        async with KVClient([store.url]) as kv:
            await kv.set("/kvt4/a", "1")
            changes: list[tuple[dict, bool]] = []
            mirror = Mirror(kv, "/kvt4", lambda c, full: changes.append((c, full)))
            await mirror.relist()
            assert set(mirror.nodes) == {"/kvt4/a"}
            # Push the store's event history (1000 events) past the mirror's index.
            for start in range(0, 1010, 50):  # 50 at a time: kvd fsyncs every write
                await asyncio.gather(*(kv.set(f"/kvt-noise/{i % 50}", str(i))
                                       for i in range(start, start + 50)))
            await kv.set("/kvt4/b", "2")
            await kv.delete("/kvt4/a")
            relists = mirror.relists
            async with mirror.running():
                await async_wait_until(_now(lambda: set(mirror.nodes) == {"/kvt4/b"}), 10,
                                       "the mirror to re-list to just /kvt4/b")
                assert mirror.relists > relists  # 401 "outdated index" forced a re-list
                await kv.set("/kvt4/c", "3")
                await async_wait_until(_now(lambda: "/kvt4/c" in mirror.nodes), 10,
                                       "the mirror to see /kvt4/c")
                assert changes[-1] == ({"/kvt4/c": mirror.nodes["/kvt4/c"]}, False)
                await kv.delete("/kvt4", recursive=True)
                await async_wait_until(_now(lambda: mirror.nodes == {}), 10,
                                       "the mirror to see the recursive delete")

    run(body())


def _now(condition):
    """A plain check as the coroutine async_wait_until polls (the mirror updates in the
    event loop, which keeps running between polls)."""
    async def check() -> bool:
        return bool(condition())
    return check


def watchers(store: Store) -> int:
    """How many watches the store holds open (``/v2/stats/store``, kvd and etcd alike)."""
    with urllib.request.urlopen(f"{store.url}/v2/stats/store", timeout=3) as reply:
        return int(json.load(reply)["watchers"])


async def _more_watchers(store: Store, before: int) -> bool:
    return await asyncio.to_thread(watchers, store) > before


@on_every_store
@pytest.mark.timeout(30)
def test_fails_over_to_next_endpoint_and_reports_total_outage(store: Store) -> None:
    dead = f"http://127.0.0.31:{free_port('127.0.0.31')}"

    async def body() -> None:
        async with KVClient([dead, store.url], request_timeout=1.0) as kv:
            await kv.set("/kvt5/x", "1")
            assert (await kv.get("/kvt5/x")).node.value == "1"
        async with KVClient([dead], request_timeout=1.0) as kv:
            with pytest.raises(ClusterUnavailable):
                await kv.get("/kvt5/x")

    run(body())
