"""update-engine's D-Bus face: ``com.coreos.update1`` on the system bus.

locksmithd, ``update_engine_client`` and users' scripts know update_engine by these names,
so they are kept exactly (``src/update_engine/dbus_constants.h`` and ``update_engine.xml``
upstream)::

    bus name   com.coreos.update1
    object     /com/coreos/update1
    interface  com.coreos.update1.Manager
        AttemptUpdate()                       start a check now (no-op unless IDLE)
        ResetStatus()                         UPDATED_NEED_REBOOT -> IDLE; no out args
        GetStatus() -> (x last_checked_time, d progress, s current_operation,
                        s new_version, x new_size)
        signal StatusUpdate(x last_checked_time, d progress, s current_operation,
                            s new_version, x new_size)

``StatusUpdate`` goes out on every change the engine reports. update_engine also
broadcasts once at startup, so a watcher that was waiting learns the state without
asking; that first one is the daemon's to send (main.py calls ``engine.announce()`` once
:attr:`UpdateBusService.owns_name` is set), and this service repeats it itself only when
it takes the name again after losing the bus, which no engine change would tell anyone.
``ResetStatus`` outside IDLE and UPDATED_NEED_REBOOT answers
``org.freedesktop.DBus.Error.Failed`` with upstream's text "Reset not allowed in this
state."; update_engine's dbus-glib binding only returned FALSE, which tells the caller no
more than a failure either.

Our extension, on the same object, answers what upstream kept in its log::

    interface  org.flotilla.Update1
        GetDetails() -> a{ss}   keys DETAIL_* below (next check time, the server's last
                                answer, why a reboot is pending); absent keys mean "none"

Who may call what is the bus policy's job (units/dbus/com.coreos.update1.conf): root owns
the name and changes state; everyone may read status and details and receive the signal.

The service knows the engine only through :class:`Engine`, so the engine's schedule,
downloads and disk writes stay out of this file and tests can serve a fake. As in kvd's
service (whose bus pieces are reused here) the object is served by one low-level
dbus-fast message handler with the introspection XML written out, because dbus-fast's
``ServiceInterface`` would also export ``org.freedesktop.DBus.Properties``, which
update_engine never had, and names arguments its own way. A lost bus connection is
retried in the background; the engine keeps working meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from flotilla.daemons.systemd.served import (
    NameServer,
    bus_address,
    introspect_path,
    introspection_xml,
)

from .status import ResetNotAllowed, Snapshot

__all__ = ["BUS_NAME", "DETAILS_INTERFACE", "INTERFACE", "OBJECT_PATH", "Engine",
           "ResetNotAllowed", "UpdateBusService", "bus_address"]

BUS_NAME = "com.coreos.update1"
OBJECT_PATH = "/com/coreos/update1"
INTERFACE = "com.coreos.update1.Manager"
DETAILS_INTERFACE = "org.flotilla.Update1"
STATUS_SIGNATURE = "xdssx"

#: GetDetails keys the engine fills; the client shows each as a shell variable.
DETAIL_NEXT_CHECK_TIME = "next_check_time"      # seconds since the epoch, as text
DETAIL_NEXT_CHECK_REASON = "next_check_reason"  # why then (schedule, back-off, disabled)
DETAIL_LAST_ANSWER = "last_answer"              # attempter.describe_answer's words
DETAIL_LAST_ERROR = "last_error"                # the last failed attempt, in words
DETAIL_REBOOT_EXPLANATION = "reboot_explanation"  # attempter.reboot_explanation's words
DETAIL_MARKED_GOOD = "marked_good"              # the running slot, once marked successful

FAILED = "org.freedesktop.DBus.Error.Failed"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"

#: (interface, member) -> out signature; every method takes no arguments.
METHODS: dict[tuple[str, str], str] = {
    (INTERFACE, "AttemptUpdate"): "",
    (INTERFACE, "ResetStatus"): "",
    (INTERFACE, "GetStatus"): STATUS_SIGNATURE,
    (DETAILS_INTERFACE, "GetDetails"): "a{ss}",
}

_STATUS_ARGS = ("last_checked_time", "x"), ("progress", "d"), ("current_operation", "s"), \
    ("new_version", "s"), ("new_size", "x")


def _args(direction: str | None) -> str:
    way = f' direction="{direction}"' if direction else ""
    return "".join(f'\n      <arg name="{name}" type="{sig}"{way}/>' for name, sig in _STATUS_ARGS)


INTROSPECTION_XML = introspection_xml(f"""\
  <interface name="{INTERFACE}">
    <method name="AttemptUpdate"/>
    <method name="ResetStatus"/>
    <method name="GetStatus">{_args("out")}
    </method>
    <signal name="StatusUpdate">{_args(None)}
    </signal>
  </interface>
  <interface name="{DETAILS_INTERFACE}">
    <method name="GetDetails">
      <arg name="details" type="a{{ss}}" direction="out"/>
    </method>
  </interface>
""")


class Engine(Protocol):
    """What the service needs from the update engine (daemons/update/engine.py)."""

    def snapshot(self) -> Snapshot:
        """The five values GetStatus answers, as they are now."""
        ...

    def attempt_update(self) -> None:
        """Start an interactive check (``installsource="ondemandupdate"``); returns at once."""
        ...

    def reset_status(self) -> None:
        """Back to IDLE from UPDATED_NEED_REBOOT; raises :class:`ResetNotAllowed` otherwise."""
        ...

    def details(self) -> dict[str, str]:
        """Extra facts for GetDetails, keyed by the DETAIL_* names."""
        ...

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener`` with the new snapshot after every change that is announced."""
        ...


def status_body(snap: Snapshot) -> list[Any]:
    """``(xdssx)`` in wire order, with the types D-Bus wants (a float progress, ints)."""
    return [int(snap.last_checked_time), float(snap.progress), str(snap.current_operation),
            str(snap.new_version), int(snap.new_size)]


def details_body(details: dict[str, str]) -> list[Any]:
    """``a{ss}``; a non-text value from the engine is shown as text rather than failing."""
    return [{str(key): str(value) for key, value in details.items()}]


class UpdateBusService(NameServer):
    """Serves the engine on one bus address; reconnects when the bus goes away.

    ``start()`` must run inside the event loop. Engine listeners may fire from any thread:
    each snapshot is handed to the loop with ``call_soon_threadsafe``, which keeps the
    order in which the engine produced them.
    """

    bus_name = BUS_NAME
    object_path = OBJECT_PATH
    log_prefix = "update_engine"

    def __init__(self, engine: Engine, address: str) -> None:
        super().__init__(address)
        self.engine = engine
        self.signals_sent = 0
        self._acquisitions = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.engine.subscribe(self._engine_changed)
        super().start()

    def _on_acquired(self) -> None:
        self._acquisitions += 1
        if self._acquisitions > 1:  # back after a lost bus: say where things stand
            self._emit(self.engine.snapshot())

    # ------------------------------------------------------------------ signals

    def _engine_changed(self, snap: Snapshot) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._emit, snap)

    def _emit(self, snap: Snapshot) -> None:
        from dbus_fast import Message

        bus = self.bus
        if bus is None or not bus.connected or not self.owns_name.is_set():
            return
        bus.send(Message.new_signal(OBJECT_PATH, INTERFACE, "StatusUpdate", STATUS_SIGNATURE,
                                    status_body(snap)))
        self.signals_sent += 1

    # ------------------------------------------------------------------ calls

    def _handle(self, msg: Any) -> Any:
        """dbus-fast's low-level hook: answer calls to our object, note name changes."""
        from dbus_fast import Message, MessageType

        if msg.message_type == MessageType.SIGNAL:
            if msg.sender == "org.freedesktop.DBus" and msg.body == [BUS_NAME]:
                if msg.member == "NameAcquired":
                    self._acquired()
                elif msg.member == "NameLost":
                    self.owns_name.clear()
                    self.log(f"lost {BUS_NAME} to another process; queued for it")
            return None
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if msg.interface == "org.freedesktop.DBus.Introspectable" \
                and msg.member == "Introspect":
            xml = _introspect(msg.path)
            return Message.new_method_return(msg, "s", [xml]) if xml else None
        if msg.path != OBJECT_PATH:
            return None
        key = self._method_key(msg.interface, msg.member)
        if key is None:
            if msg.interface in (INTERFACE, DETAILS_INTERFACE, None):
                return Message.new_error(msg, UNKNOWN_METHOD,
                                         f"{msg.interface or INTERFACE} has no method "
                                         f"{msg.member}")
            return None
        if msg.signature:
            return Message.new_error(msg, INVALID_ARGS,
                                     f"{key[1]} takes no arguments, not ({msg.signature})")
        try:
            body = self._call(key[1])
        except ResetNotAllowed as err:
            return Message.new_error(msg, FAILED, str(err))
        except Exception as err:  # answer every call; never leave a client hanging
            self.log(f"{key[1]} failed: {type(err).__name__}: {err}")
            return Message.new_error(msg, FAILED, f"internal error: {type(err).__name__}")
        return Message.new_method_return(msg, METHODS[key], body)

    @staticmethod
    def _method_key(interface: str | None, member: str) -> tuple[str, str] | None:
        """The method a call names; a call without an interface matches by member."""
        if interface is not None:
            return (interface, member) if (interface, member) in METHODS else None
        for key in METHODS:
            if key[1] == member:
                return key
        return None

    def _call(self, member: str) -> list[Any]:
        if member == "GetStatus":
            return status_body(self.engine.snapshot())
        if member == "GetDetails":
            return details_body(self.engine.details())
        if member == "AttemptUpdate":  # the engine logs it, with why it may not start
            self.engine.attempt_update()
            return []
        self.engine.reset_status()
        return []


def _introspect(path: str | None) -> str | None:
    """Our object's XML, and the nodes above it so ``busctl tree`` can walk down."""
    return introspect_path(OBJECT_PATH, INTROSPECTION_XML, path)


def start_dbus_service(engine: Engine, mode: str = "auto",
                       environ: dict[str, str] | None = None,
                       exists: Callable[[str], bool] | None = None
                       ) -> UpdateBusService | None:
    """Serve ``engine`` on the bus ``mode`` names (system, auto, none); None when off."""
    import os

    address = bus_address(mode, os.environ if environ is None else environ,
                          os.path.exists if exists is None else exists)
    if address is None:
        return None
    service = UpdateBusService(engine, address)
    service.start()
    return service
