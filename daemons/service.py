"""What every Flotilla daemon does the same way as a systemd service.

``Type=notify`` readiness, ``STATUS=`` lines, watchdog keep-alives, socket activation, and a
clean stop on SIGTERM/SIGINT. The notify protocol is a single datagram on a unix socket, so
it is spoken here directly instead of through systemd-python: that keeps the daemons free
of a C extension that has to be compiled against libsystemd on every target.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable

SD_LISTEN_FDS_START = 3


def notify(*lines: str) -> bool:
    """Sends ``lines`` (``READY=1``, ``STATUS=...``) to systemd; False if not supervised."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between keep-alives systemd expects (half its WatchdogSec), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """Sockets passed by systemd socket activation (LISTEN_FDS), in the unit's order."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


class Service:
    """The running daemon's link to its supervisor, handed to the daemon's main coroutine.

    ``stopping`` is set on SIGTERM or SIGINT; the main coroutine waits on it, shuts its
    work down, and returns. Readiness is announced once, after the daemon can serve.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = asyncio.Event()
        self.signal_received: int | None = None
        self._ready = False

    def ready(self, status: str | None = None) -> None:
        if self._ready:
            return
        self._ready = True
        notify("READY=1", *([f"STATUS={status}"] if status else []), f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        notify(f"STATUS={text}")

    def _on_signal(self, signum: int) -> None:
        self.signal_received = signum
        notify("STOPPING=1")
        self.stopping.set()

    async def _watchdog(self, interval: float) -> None:
        while not self.stopping.is_set():
            notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), interval)


def run(name: str, main: Callable[[Service], Awaitable[int | None]]) -> int:
    """Runs ``main(service)`` in a fresh event loop with signal handling and the watchdog.

    Returns the process exit status: ``main``'s return value, or 0.
    """

    async def supervise() -> int:
        service = Service(name)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service._on_signal, signum)
        interval = watchdog_interval()
        keepalive = asyncio.create_task(service._watchdog(interval)) if interval else None
        try:
            result = await main(service)
        finally:
            service.stopping.set()
            if keepalive is not None:
                await keepalive
        return int(result or 0)

    return asyncio.run(supervise())
