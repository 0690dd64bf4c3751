"""Client for systemd-hostnamed (``org.freedesktop.hostname1``).

Setting the hostname through hostnamed (rather than writing /etc/hostname) updates the
kernel's hostname and the file together and emits the change signal other services watch.
"""

from __future__ import annotations

import re

from .bus import Bus
from .errors import InvalidArgument

HOSTNAMED = "org.freedesktop.hostname1"
HOSTNAMED_PATH = "/org/freedesktop/hostname1"
HOSTNAMED_IFACE = "org.freedesktop.hostname1"

# A static hostname is a DNS name: labels of letters, digits and inner hyphens, 64 chars.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def valid_hostname(name: str) -> bool:
    return 0 < len(name) <= 64 and all(_LABEL.match(label) for label in name.split("."))


class Hostnamed:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, address: str | None = None) -> Hostnamed:
        return cls(await Bus.connect(address))

    async def close(self) -> None:
        self.bus.disconnect()

    async def set_static_hostname(self, name: str, interactive: bool = False) -> None:
        if not valid_hostname(name):
            raise InvalidArgument(f"invalid hostname {name!r}")
        await self.bus.call(
            HOSTNAMED, HOSTNAMED_PATH, HOSTNAMED_IFACE, "SetStaticHostname", "sb",
            [name, interactive],
        )

    async def set_hostname(self, name: str, interactive: bool = False) -> None:
        """Sets the transient (kernel) hostname only."""
        if not valid_hostname(name):
            raise InvalidArgument(f"invalid hostname {name!r}")
        await self.bus.call(
            HOSTNAMED, HOSTNAMED_PATH, HOSTNAMED_IFACE, "SetHostname", "sb", [name, interactive]
        )

    async def static_hostname(self) -> str:
        return await self.bus.get_property(
            HOSTNAMED, HOSTNAMED_PATH, HOSTNAMED_IFACE, "StaticHostname"
        )

    async def hostname(self) -> str:
        return await self.bus.get_property(HOSTNAMED, HOSTNAMED_PATH, HOSTNAMED_IFACE, "Hostname")
