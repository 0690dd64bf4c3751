"""Owning a well-known name on the system bus, for the daemons that serve one.

kvd (``org.flotilla.KV1``) and update-engine (``com.coreos.update1``) do the same around
their own calls: pick the bus (``--dbus=system|auto|none``, ``DBUS_SYSTEM_BUS_ADDRESS``),
connect, ask for the name, wait in the queue when another process owns it, and when the
bus goes away (dbus-daemon restarted, socket closed) connect again with a doubling delay,
logging each cause once rather than once per retry. :class:`NameServer` is that loop; a
service subclasses it and answers messages in ``_handle``. A bus problem never reaches the
daemon's real work: the loop only logs and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 30.0


_DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')
_STANDARD_INTERFACES = """\
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect"><arg name="xml" type="s" direction="out"/></method>
  </interface>
  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId"><arg name="id" type="s" direction="out"/></method>
  </interface>
"""


def introspection_xml(interfaces: str) -> str:
    """An object's introspection document: the standard interfaces, then ``interfaces``."""
    return f"{_DOCTYPE}<node>\n{_STANDARD_INTERFACES}{interfaces}</node>\n"


def introspect_path(object_path: str, xml: str, path: str | None) -> str | None:
    """What ``Introspect`` on ``path`` answers: ``xml`` for the object itself, the next
    node down for a path above it (so ``busctl tree`` can walk to it), else None."""
    if path == object_path:
        return xml
    if path is None or not object_path.startswith(path.rstrip("/") + "/"):
        return None
    below = object_path[len(path.rstrip("/")) + 1:].split("/", 1)[0]
    return f'<node>\n  <node name="{below}"/>\n</node>\n'


def bus_address(mode: str, environ: Mapping[str, str],
                exists: Callable[[str], bool]) -> str | None:
    """Which bus to serve on for ``--dbus`` (system, none, auto); None means no bus.

    ``DBUS_SYSTEM_BUS_ADDRESS`` overrides the socket path as it does for every D-Bus
    client; ``auto`` uses the system bus only when it is there to be used.
    """
    if mode == "none":
        return None
    override = environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    if override:
        return override
    if mode == "system" or exists(SYSTEM_BUS_SOCKET):
        return DEFAULT_SYSTEM_BUS
    return None


class _PatientSocket:
    """The bus socket as dbus-fast's writer sees it: a full send buffer writes 0 bytes.

    dbus-fast's asyncio writer (like dbus-next's, altdesktop/python-dbus-next#153) treats
    EAGAIN from ``send`` as a dead connection, so a burst of replies or signals bigger
    than the socket buffer would drop the service off the bus. Reporting "0 bytes sent"
    instead makes the writer wait for the socket to become writable, which it already
    knows how to do.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            return int(self._sock.send(data))
        except BlockingIOError:
            return 0

    def sendmsg(self, buffers: Any, ancdata: Any = ()) -> int:
        try:
            return int(self._sock.sendmsg(buffers, ancdata))
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def tolerate_full_socket(bus: Any) -> None:
    """Install :class:`_PatientSocket` under a connected dbus-fast bus's writer."""
    writer = getattr(bus, "_writer", None)
    if writer is not None and hasattr(writer, "sock") \
            and not isinstance(writer.sock, _PatientSocket):
        writer.sock = _PatientSocket(writer.sock)


class NameServer:
    """Serves ``bus_name`` on one bus address; reconnects when the bus goes away.

    Subclasses set ``bus_name``, ``object_path`` and ``log_prefix``, answer messages in
    :meth:`_handle`, and may hook :meth:`_connected` (before the name is asked for),
    :meth:`_on_acquired` and :meth:`_on_disconnect`. ``start()`` runs inside the loop.
    """

    bus_name = ""
    object_path = ""
    log_prefix = ""

    def __init__(self, address: str) -> None:
        self.address = address
        self.bus: Any = None
        self.owns_name = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_failure = ""

    def log(self, text: str) -> None:
        print(f"{self.log_prefix}: dbus: {text}", file=sys.stderr, flush=True)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._disconnect()

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        while True:
            try:
                await self._serve_once()
                delay = RECONNECT_FIRST_S
                self.log("lost the bus connection; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a bus problem must never reach the daemon's work
                failure = f"{type(err).__name__}: {err}"
                if failure != self._last_failure:  # once per cause, not once per retry
                    self.log(f"cannot serve {self.bus_name} on {self.address}: {failure}; "
                             f"retrying every {RECONNECT_MAX_S:.0f}s at most")
                self._last_failure = failure
            self._disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _serve_once(self) -> None:
        from dbus_fast import BusType, RequestNameReply
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
        tolerate_full_socket(bus)
        self.bus = bus
        bus.add_message_handler(self._handle)
        await self._connected(bus)
        answer = await bus.request_name(self.bus_name)
        self._last_failure = ""
        if answer == RequestNameReply.IN_QUEUE:
            self.log(f"{self.bus_name} is owned by another process; queued for it")
        else:
            self._acquired()
        await bus.wait_for_disconnect()

    def _acquired(self) -> None:
        """The name is ours (the reply to RequestName, or NameAcquired, whichever first)."""
        if self.owns_name.is_set():
            return
        self.owns_name.set()
        self.log(f"now serving {self.bus_name} at {self.object_path} on {self.address}")
        self._on_acquired()

    def _disconnect(self) -> None:
        self.owns_name.clear()
        self._on_disconnect()
        if self.bus is not None:
            with contextlib.suppress(Exception):
                self.bus.disconnect()
            self.bus = None

    # ------------------------------------------------------------------ hooks

    def _handle(self, msg: Any) -> Any:
        raise NotImplementedError

    async def _connected(self, bus: Any) -> None:
        """Connected, the name not yet asked for: add match rules here."""

    def _on_acquired(self) -> None:
        """The name became ours."""

    def _on_disconnect(self) -> None:
        """The connection is being dropped: forget per-connection state."""
