"""kvd serving org.flotilla.KV1 on a private bus that enforces the shipped policy.

Root's calls change data that HTTP then shows, an unprivileged caller (uid 65534) may read
but not write, Changed signals arrive for watched keys only, and errors carry etcd's codes
and the very JSON body HTTP answers with.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from flotilla.daemons.systemd.served import tolerate_full_socket

from tests.conditions import wait_until
from tests.process.kv.harness import Server, http_get, start_kvd
from tests.process.kv_dbus.bus import PrivateBus, dbus_send, name_has_owner, start_bus

NOBODY = 65534
DEST, PATH, IFACE = "org.flotilla.KV1", "/org/flotilla/KV1", "org.flotilla.KV1"
SIGNATURES = {"Get": "sbbb", "List": "sbb", "Set": "sstb", "Delete": "sbb",
              "CompareAndSwap": "sststs", "CompareAndDelete": "sst", "Watch": "sb",
              "Unwatch": "sb"}


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[PrivateBus, Server]]:
    bus = start_bus()
    workdir = Path(tempfile.mkdtemp(prefix="kvd-dbus-proc-"))
    server = None
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
            server = start_kvd(workdir, "127.0.0.1", "--dbus", "system")
        wait_until(lambda: name_has_owner(bus.address), 30, "kvd to own org.flotilla.KV1")
        yield bus, server
    finally:
        if server is not None:
            server.stop()
        bus.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _call(bus: MessageBus, member: str, *body: Any) -> Message:
    return await bus.call(Message(destination=DEST, path=PATH, interface=IFACE,
                                  member=member, signature=SIGNATURES[member], body=list(body)))


def call(address: str, member: str, *body: Any) -> Message:
    """One call as root on a fresh connection; the reply or error message."""

    async def run() -> Message:
        bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        try:
            return await asyncio.wait_for(_call(bus, member, *body), 20)
        finally:
            bus.disconnect()

    return asyncio.run(run())


def ok(reply: Message) -> list[Any]:
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    return reply.body


def http_json(server: Server, key: str, query: str = "") -> tuple[int, Any]:
    status, body = http_get(f"{server.url}/v2/keys{urllib.parse.quote(key)}{query}")
    return status, json.loads(body)


def http_request(server: Server, method: str, key: str, **form: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request
    data = urllib.parse.urlencode(form).encode() if form else None
    req = urllib.request.Request(f"{server.url}/v2/keys{key}", data=data, method=method,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.timeout(60)
def test_root_writes_are_visible_over_http(stack):
    bus, server = stack
    action, node, prev, index = ok(call(bus.address, "Set", "/app/greeting", "hello", 0,
                                        False))
    assert (action, node[0], node[1], node[2], prev) == ("set", "/app/greeting", "hello",
                                                         False, [])
    status, body = http_json(server, "/app/greeting")
    assert status == 200 and body["node"]["value"] == "hello"
    assert body["node"]["modifiedIndex"] == node[4] == index
    # A TTL and a replaced value show up the same way on both sides.
    action, node, prev, _ = ok(call(bus.address, "Set", "/app/greeting", "bye", 100, False))
    assert action == "set" and prev[0][1] == "hello" and 99 <= node[3] <= 100
    _, body = http_json(server, "/app/greeting")
    assert body["node"]["value"] == "bye" and 98 <= body["node"]["ttl"] <= 100
    # A directory, a compare-and-swap and deletes go through the same path.
    assert ok(call(bus.address, "Set", "/app/conf", "", 0, True))[1][2] is True
    assert ok(call(bus.address, "CompareAndSwap", "/app/greeting", "again", 0, "bye", 0,
                   ""))[0] == "compareAndSwap"
    assert ok(call(bus.address, "CompareAndSwap", "/app/new", "made", 0, "", 0,
                   "false"))[0] == "create"
    assert http_json(server, "/app/new")[1]["node"]["value"] == "made"
    mod = http_json(server, "/app/new")[1]["node"]["modifiedIndex"]
    assert ok(call(bus.address, "CompareAndDelete", "/app/new", "", mod))[0] == \
        "compareAndDelete"
    assert http_json(server, "/app/new")[0] == 404
    assert ok(call(bus.address, "Delete", "/app", True, True))[0] == "delete"
    assert http_json(server, "/app")[0] == 404


@pytest.mark.timeout(60)
def test_get_and_list_answer_what_http_answers(stack):
    bus, server = stack
    for key, value in (("/tree/b", "2"), ("/tree/a", "1"), ("/tree/sub/c", "3")):
        http_request(server, "PUT", key, value=value)
    nodes, index = ok(call(bus.address, "Get", "/tree", True, True, True))
    status, body = http_json(server, "/tree", "?recursive=true&sorted=true")
    assert status == 200

    def walk(node: dict[str, Any]) -> list[tuple[str, str, bool, int]]:
        out = [(node["key"], node.get("value", ""), node.get("dir", False),
                node["modifiedIndex"])]
        for child in node.get("nodes", []):
            out += walk(child)
        return out

    assert [(n[0], n[1], n[2], n[4]) for n in nodes] == walk(body["node"])
    assert [n[0] for n in nodes] == ["/tree", "/tree/a", "/tree/b", "/tree/sub",
                                     "/tree/sub/c"]
    assert index >= nodes[-1][4]
    # A local read (quorum=false) of a key answers the same.
    assert ok(call(bus.address, "Get", "/tree/a", False, False, False))[0][0][1] == "1"
    listed, _ = ok(call(bus.address, "List", "/tree", False, True))
    assert [n[0] for n in listed] == ["/tree/a", "/tree/b", "/tree/sub"]


@pytest.mark.timeout(60)
def test_unprivileged_caller_reads_but_may_not_write(stack):
    bus, server = stack
    http_request(server, "PUT", "/public", value="visible")
    got = dbus_send(bus.address, "Get", "string:/public", "boolean:false", "boolean:false",
                    "boolean:true", uid=NOBODY)
    assert got.returncode == 0, got.stderr
    assert '"visible"' in got.stdout
    for method, args in (("Set", ["string:/public", "string:changed", "uint64:0",
                                  "boolean:false"]),
                         ("Delete", ["string:/public", "boolean:false", "boolean:false"]),
                         ("CompareAndSwap", ["string:/public", "string:x", "uint64:0",
                                             "string:visible", "uint64:0", "string:"]),
                         ("CompareAndDelete", ["string:/public", "string:visible",
                                               "uint64:0"])):
        refused = dbus_send(bus.address, method, *args, uid=NOBODY)
        assert refused.returncode != 0, f"{method} was allowed for uid {NOBODY}"
        assert "org.freedesktop.DBus.Error.AccessDenied" in refused.stderr, refused.stderr
    assert http_json(server, "/public")[1]["node"]["value"] == "visible"
    # Watching is a read: allowed.
    watched = dbus_send(bus.address, "Watch", "string:/public", "boolean:false", uid=NOBODY)
    assert watched.returncode == 0, watched.stderr
    # The same write as root goes through, so the refusal above was the policy's.
    assert ok(call(bus.address, "Set", "/public", "changed", 0, False))[0] == "set"


@pytest.mark.timeout(60)
def test_changed_signals_arrive_for_watched_keys_only(stack):
    bus, server = stack

    async def run() -> list[list[Any]]:
        client = await MessageBus(bus_address=bus.address, bus_type=BusType.SYSTEM).connect()
        seen: list[list[Any]] = []
        done = asyncio.Event()

        def on_message(msg: Message) -> None:
            if msg.message_type == MessageType.SIGNAL and msg.member == "Changed":
                seen.append(msg.body)
                if msg.body[3] == "/watched/last":
                    done.set()

        client.add_message_handler(on_message)
        # Every Changed signal, whatever its first argument: proves none is even sent for
        # keys nobody watches.
        await client.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',interface='{IFACE}',member='Changed'"]))
        start = ok(await _call(client, "Watch", "//watched/", True))[0]
        await _call(client, "Set", "/other/x", "no", 0, False)
        await _call(client, "Set", "/watched/a", "1", 0, False)
        await asyncio.to_thread(http_request, server, "PUT", "/elsewhere", value="no")
        await asyncio.to_thread(http_request, server, "PUT", "/watched/b", value="2")
        await _call(client, "Delete", "/watched/a", False, False)
        await _call(client, "Set", "/watched/last", "end", 0, False)
        await asyncio.wait_for(done.wait(), 20)
        client.disconnect()
        return [start, seen]

    start, seen = asyncio.run(run())
    assert [(s[0], s[1], s[2], s[3], s[4]) for s in seen] == [
        ("/watched", True, "set", "/watched/a", "1"),
        ("/watched", True, "set", "/watched/b", "2"),
        ("/watched", True, "delete", "/watched/a", ""),
        ("/watched", True, "set", "/watched/last", "end"),
    ]
    assert seen[2][5] == "1", "a delete carries the value it removed"
    indexes = [s[6] for s in seen]
    assert indexes == sorted(indexes) and indexes[0] > start
    # The caller left the bus, so kvd dropped the store watcher it held for it.
    wait_until(lambda: json.loads(http_get(server.url + "/v2/stats/store")[1])["watchers"]
               == 0, 20, "kvd to drop the departed caller's watch")


@pytest.mark.timeout(60)
def test_errors_are_named_and_carry_etcds_body(stack):
    bus, server = stack
    http_request(server, "PUT", "/err/file", value="v")
    http_request(server, "PUT", "/err/dir/child", value="c")
    cases = [
        (("Get", "/err/missing", False, False, True), ("GET", "/err/missing", {}),
         "KeyNotFound", 100),
        (("CompareAndSwap", "/err/file", "x", 0, "wrong", 0, ""),
         ("PUT", "/err/file", {"value": "x", "prevValue": "wrong"}), "TestFailed", 101),
        (("CompareAndSwap", "/err/file", "x", 0, "", 0, "false"),
         ("PUT", "/err/file", {"value": "x", "prevExist": "false"}), "NodeExist", 105),
        (("Set", "/err/dir", "x", 0, False), ("PUT", "/err/dir", {"value": "x"}),
         "NotFile", 102),
        (("Delete", "/err/dir", False, True), ("DELETE", "/err/dir?dir=true", {}),
         "DirNotEmpty", 108),
        (("Set", "/", "x", 0, False), ("PUT", "/", {"value": "x"}), "RootROnly", 107),
        (("CompareAndSwap", "/err/file", "x", 0, "", 0, "maybe"),
         ("PUT", "/err/file", {"value": "x", "prevExist": "maybe"}), "InvalidField", 209),
    ]
    for dbus_args, (method, key, form), name, code in cases:
        reply = call(bus.address, *dbus_args)
        assert reply.message_type == MessageType.ERROR, dbus_args
        assert reply.error_name == f"org.flotilla.KV1.Error.{name}", reply.error_name
        got = json.loads(reply.body[0])
        if method == "GET":
            status, raw = http_get(f"{server.url}/v2/keys{key}")
        else:
            status, raw = http_request(server, method, key, **form)
        want = json.loads(raw)
        assert status >= 400, (dbus_args, status)
        assert got["errorCode"] == code == want["errorCode"], (got, want)
        assert (got["message"], got.get("cause")) == (want["message"], want.get("cause"))
    # Calls HTTP has no single form for refuse to run without a condition.
    reply = call(bus.address, "CompareAndDelete", "/err/file", "", 0)
    assert reply.error_name == "org.flotilla.KV1.Error.IndexOrValueRequired"
    assert json.loads(reply.body[0])["errorCode"] == 207
    reply = call(bus.address, "List", "/err/file", False, False)
    assert reply.error_name == "org.flotilla.KV1.Error.NotDir"
    assert http_json(server, "/err/file")[1]["node"]["value"] == "v", "nothing changed"


@pytest.mark.timeout(60)
def test_introspection_describes_the_interface(stack):
    bus, _ = stack
    got = dbus_send(bus.address, "Get", "string:/", "boolean:false", "boolean:false",
                    "boolean:true", uid=NOBODY)
    assert got.returncode == 0, got.stderr

    async def run() -> str:
        client = await MessageBus(bus_address=bus.address, bus_type=BusType.SYSTEM).connect()
        reply = await client.call(Message(destination=DEST, path=PATH,
                                          interface="org.freedesktop.DBus.Introspectable",
                                          member="Introspect"))
        client.disconnect()
        return reply.body[0]

    xml = asyncio.run(run())
    for member in [*SIGNATURES, "Changed"]:
        assert f'name="{member}"' in xml


@pytest.mark.timeout(90)
def test_kvd_serves_http_without_a_bus_and_joins_it_later(tmp_path):
    socket_dir = Path(tempfile.mkdtemp(prefix="kvd-dbus-late-"))
    socket_dir.chmod(0o755)
    socket_path = socket_dir / "bus"
    server = bus = None
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={socket_path}")
            server = start_kvd(tmp_path, "127.0.0.1", "--dbus", "system")
        assert http_request(server, "PUT", "/k", value="v")[0] == 201
        wait_until(lambda: "cannot serve org.flotilla.KV1" in server.log(), 20,
                   "kvd to report the missing bus")
        started = time.monotonic()
        bus = start_bus(socket_path)
        wait_until(lambda: name_has_owner(bus.address), 45, "kvd to join the late bus")
        assert time.monotonic() - started < 45
        assert ok(call(bus.address, "Get", "/k", False, False, True))[0][0][1] == "v"
    finally:
        if server is not None:
            server.stop()
        if bus is not None:
            bus.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.timeout(60)
def test_a_burst_of_large_replies_keeps_kvd_on_the_bus(stack):
    """Replies far beyond the socket buffer must queue, not drop kvd off the bus."""
    bus, _ = stack

    async def run() -> list[Message]:
        client = await MessageBus(bus_address=bus.address, bus_type=BusType.SYSTEM).connect()
        tolerate_full_socket(client)  # the test client has the same writer
        try:
            # The system bus lets a connection wait on at most 128 replies at once.
            for batch in range(2):
                sets = await asyncio.gather(*(
                    _call(client, "Set", f"/burst/{batch}-{i}", "x" * 1000, 0, False)
                    for i in range(100)))
                assert {m.message_type for m in sets} == {MessageType.METHOD_RETURN}
            return await asyncio.wait_for(asyncio.gather(*(
                _call(client, "Get", "/burst", True, False, False) for _ in range(80))), 30)
        finally:
            client.disconnect()

    replies = asyncio.run(run())
    assert [r.message_type for r in replies] == [MessageType.METHOD_RETURN] * 80, \
        {r.error_name for r in replies}
    assert {len(r.body[0]) for r in replies} == {201}
    assert name_has_owner(bus.address)
