"""The systemd client every Flotilla daemon uses: systemd1, login1 and hostname1 over D-Bus.

Built on dbus-fast. All three clients can share one :class:`Bus` connection::

    bus = await Bus.connect()
    systemd, logind = Systemd(bus), Logind(bus)
"""

from .bus import Bus
from .errors import (
    AccessDenied,
    BusError,
    Disconnected,
    InvalidArgument,
    JobFailed,
    JobTimeout,
    NoSuchUnit,
    SystemdError,
    UnitMasked,
)
from .hostnamed import Hostnamed, valid_hostname
from .logind import Inhibitor, InhibitorLock, Logind
from .manager import Systemd, UnitFileChange, UnitStatus, UnitWatch, exec_start, unit_path

__all__ = [
    "AccessDenied",
    "Bus",
    "BusError",
    "Disconnected",
    "Hostnamed",
    "Inhibitor",
    "InhibitorLock",
    "InvalidArgument",
    "JobFailed",
    "JobTimeout",
    "Logind",
    "NoSuchUnit",
    "Systemd",
    "SystemdError",
    "UnitFileChange",
    "UnitMasked",
    "UnitStatus",
    "UnitWatch",
    "exec_start",
    "unit_path",
    "valid_hostname",
]
