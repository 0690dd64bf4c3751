"""update-engine's D-Bus service on a private bus that enforces the shipped policy.

The interface is checked against update_engine's: names, introspected signatures,
GetStatus's wire types and values, StatusUpdate on every change (and once when the name
is taken), AttemptUpdate and ResetStatus with upstream's refusal, our GetDetails; and the
policy: uid 65534 reads status and details but cannot start or reset an update, nor own
the name.
"""

from __future__ import annotations

import asyncio
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from tests.conditions import wait_until
from tests.process.kv_dbus.bus import PrivateBus
from tests.process.update.harness import (
    DEST,
    DETAILS_IFACE,
    IFACE,
    NOBODY,
    PATH,
    Engine,
    _env,
    as_user,
    dbus_send,
    python_argv,
    start_bus,
    start_engine,
)

IDLE = "UPDATE_STATUS_IDLE"
NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"


async def _connect(address: str) -> MessageBus:
    return await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()


def call(address: str, member: str, interface: str = IFACE) -> Message:
    """One call as root on a fresh connection; the reply or error message."""
    async def run() -> Message:
        client = await _connect(address)
        try:
            return await client.call(Message(destination=DEST, path=PATH,
                                             interface=interface, member=member))
        finally:
            client.disconnect()
    return asyncio.run(run())


class SignalRecorder:
    """StatusUpdate bodies seen by a root connection, recorded on a background loop."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.seen: list[tuple[str, list[Any]]] = []

    async def start(self) -> MessageBus:
        client = await _connect(self.address)

        def handler(msg: Message) -> None:
            if msg.message_type == MessageType.SIGNAL and msg.member == "StatusUpdate":
                self.seen.append((msg.signature, list(msg.body)))

        client.add_message_handler(handler)
        reply = await client.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',interface='{IFACE}',member='StatusUpdate'"]))
        assert reply.message_type == MessageType.METHOD_RETURN
        return client

    def ops(self) -> list[str]:
        return [body[2] for _, body in self.seen]


async def _until(condition: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_introspection_matches_update_engines_interface(engine: Engine,
                                                         bus: PrivateBus) -> None:
    reply = call(bus.address, "Introspect", "org.freedesktop.DBus.Introspectable")
    root = ET.fromstring(reply.body[0])
    ifaces = {i.get("name"): i for i in root.findall("interface")}
    assert set(ifaces) >= {IFACE, DETAILS_IFACE}
    assert "org.freedesktop.DBus.Properties" not in ifaces  # update_engine has none
    manager = ifaces[IFACE]

    def args(element: ET.Element) -> list[tuple[str | None, str | None, str | None]]:
        return [(a.get("name"), a.get("type"), a.get("direction")) for a in element]

    methods = {m.get("name"): m for m in manager.findall("method")}
    assert set(methods) == {"AttemptUpdate", "ResetStatus", "GetStatus"}
    assert args(methods["AttemptUpdate"]) == [] and args(methods["ResetStatus"]) == []
    names = ["last_checked_time", "progress", "current_operation", "new_version", "new_size"]
    assert args(methods["GetStatus"]) == list(zip(names, "xdssx", ["out"] * 5, strict=True))
    (status_update,) = manager.findall("signal")
    assert status_update.get("name") == "StatusUpdate"
    assert args(status_update) == list(zip(names, "xdssx", [None] * 5, strict=True))
    (details,) = ifaces[DETAILS_IFACE].findall("method")
    assert (details.get("name"), args(details)) == ("GetDetails",
                                                     [("details", "a{ss}", "out")])
    # busctl walks down from / to the object
    top = ET.fromstring(dbus_send(bus.address, "Introspect", path="/",
                                  interface="org.freedesktop.DBus.Introspectable")
                        .stdout.split('"', 1)[1].rsplit('"', 1)[0])
    assert [n.get("name") for n in top.findall("node")] == ["com"]
    tree = subprocess.run(["busctl", f"--address={bus.address}", "tree", DEST],
                          capture_output=True, text=True, timeout=20)
    assert tree.returncode == 0 and "/com/coreos/update1" in tree.stdout, tree.stderr
    seen = subprocess.run(["busctl", f"--address={bus.address}", "call", DEST, PATH, IFACE,
                           "GetStatus"], capture_output=True, text=True, timeout=20)
    assert seen.stdout == 'xdssx 0 0 "UPDATE_STATUS_IDLE" "0.0.0" 0\n', seen.stderr


def test_get_status_answers_xdssx_with_upstreams_initial_values(engine: Engine,
                                                                bus: PrivateBus) -> None:
    reply = call(bus.address, "GetStatus")
    assert reply.message_type == MessageType.METHOD_RETURN
    assert reply.signature == "xdssx"
    assert reply.body == [0, 0.0, IDLE, "0.0.0", 0]
    engine.send(checked=1_700_000_999, offered=["9.9.9", 12345])
    assert call(bus.address, "GetStatus").body == [1_700_000_999, 0.0, IDLE, "9.9.9", 12345]


def test_status_update_is_signalled_at_startup_and_on_every_change(
        bus: PrivateBus, workdir: Path) -> None:
    recorder = SignalRecorder(bus.address)

    async def scenario() -> None:
        client = await recorder.start()
        try:
            fake = await asyncio.to_thread(start_engine, bus.address, workdir)
            try:
                await _until(lambda: recorder.ops() == [IDLE], 10, "the startup broadcast")
                await asyncio.to_thread(fake.send, attempt="update")
                reply = await client.call(Message(destination=DEST, path=PATH,
                                                  interface=IFACE, member="AttemptUpdate"))
                assert reply.message_type == MessageType.METHOD_RETURN, reply.body
                assert reply.signature == "" and reply.body == []
                await _until(lambda: NEED_REBOOT in recorder.ops(), 10, "NEED_REBOOT")
            finally:
                await asyncio.to_thread(fake.stop)
        finally:
            client.disconnect()

    asyncio.run(scenario())
    assert recorder.ops() == [IDLE, "UPDATE_STATUS_CHECKING_FOR_UPDATE",
                              "UPDATE_STATUS_UPDATE_AVAILABLE", "UPDATE_STATUS_DOWNLOADING",
                              "UPDATE_STATUS_DOWNLOADING", "UPDATE_STATUS_DOWNLOADING",
                              "UPDATE_STATUS_FINALIZING", NEED_REBOOT]
    assert {sig for sig, _ in recorder.seen} == {"xdssx"}
    downloads = [body for _, body in recorder.seen if body[2] == "UPDATE_STATUS_DOWNLOADING"]
    assert [body[1] for body in downloads] == [0.0, 0.5, 1.0]
    assert recorder.seen[-1][1] == [1_700_000_123, 1.0, NEED_REBOOT, "3815.2.0", 314_572_800]


def test_attempt_update_starts_a_check_and_reset_status_obeys_upstreams_rule(
        engine: Engine, bus: PrivateBus) -> None:
    engine.send(attempt="update")
    assert call(bus.address, "AttemptUpdate").message_type == MessageType.METHOD_RETURN
    wait_until(lambda: call(bus.address, "GetStatus").body[2] == NEED_REBOOT, 10,
               "the scripted update to finish")
    assert engine.calls("attempt_update") == 1
    reset = call(bus.address, "ResetStatus")
    assert reset.message_type == MessageType.METHOD_RETURN and reset.signature == ""
    assert call(bus.address, "GetStatus").body == [1_700_000_123, 0.0, IDLE, "0.0.0", 0]
    # in the middle of an attempt the reset is refused with upstream's words
    engine.send(goto=["UPDATE_STATUS_CHECKING_FOR_UPDATE"])
    refused = call(bus.address, "ResetStatus")
    assert refused.message_type == MessageType.ERROR
    assert refused.error_name == "org.freedesktop.DBus.Error.Failed"
    assert refused.body == ["Reset not allowed in this state."]
    assert call(bus.address, "GetStatus").body[2] == "UPDATE_STATUS_CHECKING_FOR_UPDATE"
    # a reset from IDLE is a no-op that succeeds
    engine.send(goto=[IDLE])
    assert call(bus.address, "ResetStatus").message_type == MessageType.METHOD_RETURN


def test_get_details_passes_the_engines_facts(engine: Engine, bus: PrivateBus) -> None:
    assert call(bus.address, "GetDetails", DETAILS_IFACE).body == [{}]
    facts = {"next_check_time": "1700002800", "last_answer": "no update available"}
    engine.send(details=facts)
    reply = call(bus.address, "GetDetails", DETAILS_IFACE)
    assert reply.signature == "a{ss}" and reply.body == [facts]


def test_calls_with_arguments_or_unknown_members_are_refused(engine: Engine,
                                                             bus: PrivateBus) -> None:
    wrong = dbus_send(bus.address, "GetStatus", "string:x")
    assert wrong.returncode != 0
    assert "org.freedesktop.DBus.Error.InvalidArgs" in wrong.stderr
    missing = dbus_send(bus.address, "Frobnicate")
    assert missing.returncode != 0
    assert "org.freedesktop.DBus.Error.UnknownMethod" in missing.stderr


def test_policy_lets_everyone_read_and_only_root_change(engine: Engine,
                                                        bus: PrivateBus) -> None:
    status = dbus_send(bus.address, "GetStatus", uid=NOBODY)
    assert status.returncode == 0, status.stderr
    assert f'string "{IDLE}"' in status.stdout and "int64 0" in status.stdout
    details = dbus_send(bus.address, "GetDetails", interface=DETAILS_IFACE, uid=NOBODY)
    assert details.returncode == 0, details.stderr
    peer = dbus_send(bus.address, "Ping", interface="org.freedesktop.DBus.Peer", uid=NOBODY)
    assert peer.returncode == 0, peer.stderr
    for member in ("AttemptUpdate", "ResetStatus"):
        refused = dbus_send(bus.address, member, uid=NOBODY)
        assert refused.returncode != 0
        assert ACCESS_DENIED in refused.stderr, refused.stderr
    assert engine.calls("attempt_update") == 0 and engine.calls("reset_status") == 0
    own = dbus_send(bus.address, "RequestName", f"string:{DEST}", "uint32:4",
                    dest="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus", uid=NOBODY)
    assert own.returncode != 0 and ACCESS_DENIED in own.stderr, own.stdout + own.stderr
    # root's own calls go through
    assert dbus_send(bus.address, "AttemptUpdate").returncode == 0
    assert engine.calls("attempt_update") == 1


def test_an_unprivileged_caller_receives_status_update(engine: Engine,
                                                       bus: PrivateBus) -> None:
    monitor_script = (
        "import asyncio, sys\n"
        "from dbus_fast import BusType, Message\n"
        "from dbus_fast.aio import MessageBus\n"
        "async def main():\n"
        "    bus = await MessageBus(bus_address=sys.argv[-1], bus_type=BusType.SYSTEM).connect()\n"
        "    got = asyncio.get_running_loop().create_future()\n"
        "    bus.add_message_handler(lambda m: m.member == 'StatusUpdate' and not got.done()"
        " and got.set_result(m.body))\n"
        "    await bus.call(Message(destination='org.freedesktop.DBus',"
        " path='/org/freedesktop/DBus', interface='org.freedesktop.DBus', member='AddMatch',"
        " signature='s', body=[\"type='signal',member='StatusUpdate'\"]))\n"
        "    print('ready', flush=True)\n"
        "    print(await asyncio.wait_for(got, 20), flush=True)\n"
        "asyncio.run(main())\n")
    proc = subprocess.Popen([*python_argv(NOBODY, code=monitor_script), bus.address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(bus.address), cwd="/", **as_user(NOBODY))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr
        engine.send(goto=["UPDATE_STATUS_CHECKING_FOR_UPDATE"])
        out, err = proc.communicate(timeout=30)
        assert out.strip() == "[0, 0.0, 'UPDATE_STATUS_CHECKING_FOR_UPDATE', '0.0.0', 0]", err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_after_the_bus_restarts_the_service_takes_the_name_again_and_says_its_status(
        workdir: Path) -> None:
    socket_path = workdir / "bus.sock"
    first = start_bus(socket_path)
    fake: Engine | None = None
    second: PrivateBus | None = None
    try:
        fake = start_engine(first.address, workdir)
        fake.send(offered=["4000.0.0", 42], checked=1_700_000_500)
        first.stop()
        socket_path.unlink(missing_ok=True)
        # The new bus listens elsewhere until the recorder is subscribed, then moves to
        # the old path, so the service cannot come back before anyone listens.
        staging = workdir / "staging.sock"
        second = start_bus(staging)
        recorder = SignalRecorder(second.address)

        async def scenario() -> None:
            client = await recorder.start()
            try:
                staging.rename(socket_path)
                await _until(lambda: recorder.seen, 20, "the status after reconnecting")
            finally:
                client.disconnect()

        asyncio.run(scenario())
        assert recorder.seen == [("xdssx", [1_700_000_500, 0.0, IDLE, "4000.0.0", 42])]
        assert call(f"unix:path={socket_path}", "GetStatus").body[3] == "4000.0.0"
    finally:
        if fake is not None:
            fake.stop()
        if second is not None:
            second.stop()
        first.stop()
