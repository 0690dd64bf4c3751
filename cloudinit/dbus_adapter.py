"""The running machine's systemd and hostnamed, through ``flotilla.daemons.systemd``.

A thin binding of :class:`SystemdControl`/:class:`HostnameControl` onto the shared D-Bus
client; imported only when the command applies to the live system (``--root /``), so
validation, dry runs on images and tests never load dbus-fast.

Both bindings share one bus connection (:func:`connect`): each connection costs an
authentication handshake and a Hello round trip, which is a visible share of a run.
"""

from __future__ import annotations

import asyncio

from flotilla.daemons import systemd as sd

from .systemd_api import SystemdError

JOB_TIMEOUT = 600.0  # the original's units allowed 10 minutes for the whole run


class DbusSystemd:
    def __init__(self, client: sd.Systemd) -> None:
        self.client = client

    @classmethod
    async def connect(cls) -> DbusSystemd:
        return cls(await sd.Systemd.connect())

    async def unit_state(self, name: str) -> tuple[str, str, str]:
        """Both questions are sent at once; the connection carries them in parallel."""
        status, file_state = await asyncio.gather(self.client.unit_status(name),
                                                  self.client.unit_file_state(name),
                                                  return_exceptions=True)
        if isinstance(status, BaseException):
            if isinstance(status, sd.SystemdError):
                raise SystemdError(str(status)) from status
            raise status
        if isinstance(file_state, sd.SystemdError):
            file_state = ""
        elif isinstance(file_state, BaseException):
            raise file_state
        return status.load_state, status.active_state, file_state

    async def daemon_reload(self) -> None:
        try:
            await self.client.daemon_reload()
        except sd.SystemdError as err:
            raise SystemdError(f"daemon-reload: {err}") from err

    async def enable_unit_files(self, names: list[str], runtime: bool) -> None:
        try:
            await self.client.enable_unit_files(names, runtime=runtime, force=True)
        except sd.SystemdError as err:
            raise SystemdError(f"enable {' '.join(names)}: {err}") from err

    async def unit_command(self, name: str, command: str) -> None:
        try:
            await self.client.unit_command(command, name, timeout=JOB_TIMEOUT)
        except sd.SystemdError as err:
            raise SystemdError(f"{command} {name}: {err}") from err

    async def start_transient_service(self, name: str, argv: list[str]) -> None:
        try:
            await self.client.start_transient_unit(
                name, [("Type", "s", "oneshot"), ("Description", "s", "cloud-config script"),
                       sd.exec_start(argv)], timeout=JOB_TIMEOUT)
        except sd.SystemdError as err:
            raise SystemdError(f"script {name}: {err}") from err


class DbusHostname:
    def __init__(self, client: sd.Hostnamed) -> None:
        self.client = client

    @classmethod
    async def connect(cls) -> DbusHostname:
        return cls(await sd.Hostnamed.connect())

    async def static_hostname(self) -> str:
        try:
            return await self.client.static_hostname()
        except sd.SystemdError as err:
            raise SystemdError(f"reading the hostname: {err}") from err

    async def set_static_hostname(self, hostname: str) -> None:
        try:
            await self.client.set_static_hostname(hostname)
            await self.client.set_hostname(hostname)
        except sd.SystemdError as err:
            raise SystemdError(f"hostname {hostname}: {err}") from err


async def connect(address: str | None = None) -> tuple[DbusSystemd, DbusHostname]:
    """systemd and hostnamed over one system-bus connection. Any failure to connect (no
    socket, refused authentication, no systemd) is a SystemdError saying so."""
    try:
        systemd = await sd.Systemd.connect(address)
    except Exception as err:  # the bus library's own error types vary by cause
        raise SystemdError(f"{type(err).__name__}: {err}") from err
    return DbusSystemd(systemd), DbusHostname(sd.Hostnamed(systemd.bus))
