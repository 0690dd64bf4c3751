"""One system-bus connection shared by the systemd, logind and hostnamed clients.

The clients speak raw D-Bus messages through dbus-fast rather than introspected proxies:
the interfaces are fixed and well documented, and skipping introspection saves a round trip
per object and keeps start-up fast. Signal routing (match rules and handlers) lives here so
that several clients on one connection never install the same match twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from .errors import Disconnected, from_dbus

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"

SignalHandler = Callable[[Message], None]


class Bus:
    """A connected system bus with typed-error calls and reference-counted match rules."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        self._matches: dict[str, int] = {}
        self._handlers: list[SignalHandler] = []
        bus.add_message_handler(self._dispatch)

    @classmethod
    async def connect(cls, address: str | None = None) -> Bus:
        """Connects to ``address``, ``$DBUS_SYSTEM_BUS_ADDRESS``, or the system bus.

        Unix file descriptors are negotiated because logind's inhibitor locks come back as
        file descriptors.
        """
        address = address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        bus = MessageBus(bus_address=address, bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
        await bus.connect()
        return cls(bus)

    @property
    def connected(self) -> bool:
        return self._bus.connected

    def disconnect(self) -> None:
        self._bus.disconnect()

    async def wait_for_disconnect(self) -> None:
        await self._bus.wait_for_disconnect()

    async def call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        unit: str | None = None,
    ) -> Message:
        """Calls a method; an error reply is raised as the matching typed exception."""
        try:
            reply = await self._bus.call(
                Message(
                    destination=destination,
                    path=path,
                    interface=interface,
                    member=member,
                    signature=signature,
                    body=body or [],
                )
            )
        except (EOFError, ConnectionError) as exc:
            raise Disconnected(
                f"{interface}.{member}: connection closed before the reply ({exc!r})", unit=unit
            ) from exc
        if reply is None:
            raise from_dbus("org.freedesktop.DBus.Error.NoReply", "no reply", unit)
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name or ""
            raise from_dbus(reply.error_name or "", str(text), unit)
        return reply

    async def emit(self, path: str, interface: str, member: str, signature: str = "",
                   body: list[Any] | None = None) -> None:
        """Sends a signal from this connection and waits until it is written out."""
        try:
            await self._bus.send(Message.new_signal(path, interface, member, signature,
                                                    body or []))
        except (EOFError, ConnectionError) as exc:
            raise Disconnected(f"{interface}.{member}: connection closed ({exc!r})") from exc

    async def get_property(self, destination: str, path: str, interface: str, name: str) -> Any:
        reply = await self.call(
            destination,
            path,
            "org.freedesktop.DBus.Properties",
            "Get",
            "ss",
            [interface, name],
        )
        return reply.body[0].value

    async def get_all_properties(self, destination: str, path: str, interface: str) -> dict:
        reply = await self.call(
            destination, path, "org.freedesktop.DBus.Properties", "GetAll", "s", [interface]
        )
        return {key: variant.value for key, variant in reply.body[0].items()}

    async def add_match(self, rule: str) -> None:
        """Installs a match rule once, however many subscribers ask for it."""
        count = self._matches.get(rule, 0)
        if count == 0:
            await self.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, "AddMatch", "s", [rule])
        self._matches[rule] = count + 1

    async def remove_match(self, rule: str) -> None:
        count = self._matches.get(rule, 0)
        if count <= 1:
            self._matches.pop(rule, None)
            if count == 1 and self._bus.connected:
                await self.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, "RemoveMatch", "s", [rule])
        else:
            self._matches[rule] = count - 1

    def add_signal_handler(self, handler: SignalHandler) -> None:
        self._handlers.append(handler)

    def remove_signal_handler(self, handler: SignalHandler) -> None:
        if handler in self._handlers:
            self._handlers.remove(handler)

    def _dispatch(self, message: Message) -> bool:
        if message.message_type == MessageType.SIGNAL:
            for handler in list(self._handlers):
                handler(message)
        return False
