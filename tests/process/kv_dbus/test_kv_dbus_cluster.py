"""org.flotilla.KV1 served by a member of a three-member kvd cluster.

All three members share one bus: one owns the name, the others queue for it. D-Bus writes
are replicated (every member reads them over HTTP), writes made over HTTP on another
member produce Changed signals, and when the owner stops a queued member takes over.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from tests.conditions import wait_until
from tests.process.kv_cluster.harness import Cluster, Member
from tests.process.kv_dbus.bus import PrivateBus, start_bus

DEST, PATH, IFACE = "org.flotilla.KV1", "/org/flotilla/KV1", "org.flotilla.KV1"


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[PrivateBus, Cluster]]:
    bus = start_bus()
    workdir = Path(tempfile.mkdtemp(prefix="kvd-dbus-cluster-"))
    cluster = Cluster(workdir, "--dbus", "system")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
            cluster.start()
        yield bus, cluster
    finally:
        cluster.stop()
        bus.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _connect(bus: PrivateBus) -> MessageBus:
    return await MessageBus(bus_address=bus.address, bus_type=BusType.SYSTEM).connect()


async def _driver(client: MessageBus, member: str, signature: str, *body: Any) -> Message:
    return await client.call(Message(destination="org.freedesktop.DBus",
                                     path="/org/freedesktop/DBus",
                                     interface="org.freedesktop.DBus", member=member,
                                     signature=signature, body=list(body)))


def owner(bus: PrivateBus, cluster: Cluster) -> Member | None:
    """The member whose process owns org.flotilla.KV1 right now, if any."""

    async def run() -> int | None:
        client = await _connect(bus)
        try:
            reply = await _driver(client, "GetConnectionUnixProcessID", "s", DEST)
            return reply.body[0] if reply.message_type == MessageType.METHOD_RETURN else None
        finally:
            client.disconnect()

    pid = asyncio.run(run())
    return next((m for m in cluster.members if m.proc is not None and m.proc.pid == pid
                 and m.alive), None)


def call(bus: PrivateBus, member: str, signature: str, *body: Any) -> list[Any]:
    async def run() -> Message:
        client = await _connect(bus)
        try:
            return await asyncio.wait_for(client.call(Message(
                destination=DEST, path=PATH, interface=IFACE, member=member,
                signature=signature, body=list(body))), 20)
        finally:
            client.disconnect()

    reply = asyncio.run(run())
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    return reply.body


@pytest.mark.timeout(90)
def test_dbus_writes_are_replicated_and_http_writes_are_signalled(setup):
    bus, cluster = setup
    serving = wait_until(lambda: owner(bus, cluster), 30, "a member to own org.flotilla.KV1")
    action, node, _, _ = call(bus, "Set", "sstb", "/cluster/k", "replicated", 0, False)
    assert action == "set"
    for m in cluster.members:
        got = m.get("/v2/keys/cluster/k")  # linearizable read on every member
        assert got.status_code == 200 and got.json()["node"]["value"] == "replicated"
        assert got.json()["node"]["modifiedIndex"] == node[4]
    other = next(m for m in cluster.members if m is not serving)

    async def watch_and_write() -> list[Any]:
        client = await _connect(bus)
        arrived: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def on_message(msg: Message) -> None:
            if msg.message_type == MessageType.SIGNAL and msg.member == "Changed" \
                    and not arrived.done():
                arrived.set_result(msg.body)

        client.add_message_handler(on_message)
        await _driver(client, "AddMatch", "s",
                      f"type='signal',interface='{IFACE}',member='Changed',arg0='/cluster'")
        await client.call(Message(destination=DEST, path=PATH, interface=IFACE,
                                  member="Watch", signature="sb", body=["/cluster", True]))
        response = await asyncio.to_thread(other.put, "/cluster/from-http", "via " + other.name)
        assert response.status_code == 201, response.text
        body = await asyncio.wait_for(arrived, 20)
        client.disconnect()
        return body

    body = asyncio.run(watch_and_write())
    assert body[:5] == ["/cluster", True, "set", "/cluster/from-http", "via " + other.name]


@pytest.mark.timeout(90)
def test_a_queued_member_takes_the_name_when_the_owner_stops(setup):
    bus, cluster = setup
    first = wait_until(lambda: owner(bus, cluster), 30, "a member to own org.flotilla.KV1")
    call(bus, "Set", "sstb", "/cluster/handover", "kept", 0, False)
    first.stop()
    try:
        second = wait_until(lambda: owner(bus, cluster), 30, "another member to take the name")
        assert second is not first
        nodes, _ = wait_until(
            lambda: call(bus, "Get", "sbbb", "/cluster/handover", False, False, True), 30,
            "the new owner to answer a linearizable Get", tolerate=(AssertionError,))
        assert nodes[0][1] == "kept"
    finally:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
            first.start()
        cluster.wait_serving(first)
