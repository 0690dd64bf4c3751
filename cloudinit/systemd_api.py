"""The calls the executor makes to systemd and hostnamed, as an interface.

The planner and executor only ever see these protocols, so unit tests use a stand-in and
``--root`` runs use :class:`flotilla.cloudinit.offline.OfflineSystemd`. The running machine
is driven over D-Bus through :mod:`flotilla.cloudinit.dbus_adapter`.
"""

from __future__ import annotations

from typing import Protocol


class SystemdError(RuntimeError):
    """A systemd call failed (job failed, unit unknown, bus error)."""


class SystemdControl(Protocol):
    async def unit_state(self, name: str) -> tuple[str, str, str]:
        """(LoadState, ActiveState, UnitFileState) of a unit; ("not-found", "inactive", "")
        when systemd does not know it."""
        ...

    async def daemon_reload(self) -> None: ...

    async def enable_unit_files(self, names: list[str], runtime: bool) -> None:
        """EnableUnitFiles(names, runtime, force=true)."""
        ...

    async def unit_command(self, name: str, command: str) -> None:
        """start/stop/restart/reload/try-restart/reload-or-restart/reload-or-try-restart
        with mode "replace", returning when the job has finished; SystemdError if the job
        did not succeed."""
        ...

    async def start_transient_service(self, name: str, argv: list[str]) -> None:
        """Run ``argv`` as a transient service and wait for its job to finish."""
        ...


class HostnameControl(Protocol):
    async def static_hostname(self) -> str: ...

    async def set_static_hostname(self, hostname: str) -> None: ...
