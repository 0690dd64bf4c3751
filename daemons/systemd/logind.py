"""Client for systemd-logind (``org.freedesktop.login1``): reboots and inhibitor locks.

locksmith reboots through logind rather than running ``reboot``, so that inhibitor locks
taken by other software (a running backup, an update being written) are honoured, and an
update engine takes a ``shutdown`` inhibitor while it writes the passive partition.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .bus import Bus
from .errors import Disconnected, InvalidArgument

LOGIND = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_MANAGER = "org.freedesktop.login1.Manager"

INHIBIT_WHAT = frozenset(
    {"shutdown", "sleep", "idle", "handle-power-key", "handle-suspend-key",
     "handle-hibernate-key", "handle-lid-switch"}
)


@dataclass(frozen=True)
class Inhibitor:
    """One entry of logind's inhibitor list."""

    what: str
    who: str
    why: str
    mode: str
    uid: int
    pid: int


class InhibitorLock:
    """A held inhibitor lock: the lock lasts exactly as long as this file descriptor."""

    def __init__(self, fd: int, what: str, who: str) -> None:
        self.fd = fd
        self.what = what
        self.who = who

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> InhibitorLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Logind:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, address: str | None = None) -> Logind:
        return cls(await Bus.connect(address))

    async def close(self) -> None:
        self.bus.disconnect()

    async def _call(self, member: str, signature: str = "", body: list | None = None):
        return await self.bus.call(LOGIND, LOGIND_PATH, LOGIND_MANAGER, member, signature, body)

    async def _shutdown(self, member: str, interactive: bool) -> None:
        try:
            await self._call(member, "b", [interactive])
        except Disconnected:
            # The shutdown took the bus down before logind's reply reached us: the request
            # was accepted (a refusal is sent before anything stops).
            return

    async def reboot(self, interactive: bool = False) -> None:
        """Asks logind to reboot, honouring inhibitor locks (block mode ones refuse it)."""
        await self._shutdown("Reboot", interactive)

    async def power_off(self, interactive: bool = False) -> None:
        await self._shutdown("PowerOff", interactive)

    async def can_reboot(self) -> str:
        """``yes``, ``no``, ``challenge`` or ``na``."""
        return (await self._call("CanReboot")).body[0]

    async def inhibit(self, what: str, who: str, why: str, mode: str = "block") -> InhibitorLock:
        """Takes an inhibitor lock. ``what`` is a colon-separated list of INHIBIT_WHAT."""
        unknown = set(what.split(":")) - INHIBIT_WHAT
        if unknown:
            raise InvalidArgument(f"unknown inhibitor kind(s): {', '.join(sorted(unknown))}")
        if mode not in ("block", "delay"):
            raise InvalidArgument(f"inhibitor mode must be block or delay, not {mode!r}")
        reply = await self._call("Inhibit", "ssss", [what, who, why, mode])
        fd = reply.unix_fds[reply.body[0]]
        return InhibitorLock(fd, what, who)

    async def list_inhibitors(self) -> list[Inhibitor]:
        reply = await self._call("ListInhibitors")
        return [Inhibitor(*row) for row in reply.body[0]]
