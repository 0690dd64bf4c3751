"""Typed errors for everything the systemd, logind and hostnamed clients can report.

Callers branch on the type (a missing unit is not a failed job), and every error carries
the unit it concerns and the D-Bus error name, so a log line says what failed and why.
"""

from __future__ import annotations


class SystemdError(Exception):
    """A call to systemd (or logind/hostnamed) failed.

    ``unit`` names the unit the call was about, if any; ``dbus_error`` is the D-Bus error
    name the service replied with (``None`` for failures found on our side, like a job
    whose result was not ``done``).
    """

    def __init__(self, message: str, *, unit: str | None = None, dbus_error: str | None = None):
        self.unit = unit
        self.dbus_error = dbus_error
        self.detail = message
        where = f"{unit}: " if unit else ""
        why = f" [{dbus_error}]" if dbus_error else ""
        super().__init__(f"{where}{message}{why}")


class NoSuchUnit(SystemdError):
    """The unit does not exist (not loaded and no unit file found)."""


class UnitMasked(SystemdError):
    """The unit is masked, so it cannot be started."""


class AccessDenied(SystemdError):
    """The caller is not allowed to do this (D-Bus policy or polkit said no)."""


class InvalidArgument(SystemdError):
    """systemd rejected an argument: a bad unit name, property or mode."""


class JobFailed(SystemdError):
    """The job ran and ended with a result other than ``done``.

    ``result`` is systemd's job result: ``failed``, ``canceled``, ``timeout``,
    ``dependency``, ``skipped`` or ``invalid``.
    """

    def __init__(self, unit: str, job_type: str, result: str) -> None:
        self.result = result
        self.job_type = job_type
        super().__init__(f"{job_type} job finished with result '{result}'", unit=unit)


class JobTimeout(SystemdError):
    """We stopped waiting for a job; it may still be running inside systemd."""


class BusError(SystemdError):
    """Any other D-Bus error reply."""


class Disconnected(SystemdError):
    """The bus connection closed before the reply arrived (the peer went away)."""


# systemd's and the bus's error names, mapped to the exception that best describes them.
_ERROR_TYPES: dict[str, type[SystemdError]] = {
    "org.freedesktop.systemd1.NoSuchUnit": NoSuchUnit,
    "org.freedesktop.systemd1.LoadFailed": NoSuchUnit,
    "org.freedesktop.systemd1.UnitMasked": UnitMasked,
    "org.freedesktop.DBus.Error.AccessDenied": AccessDenied,
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired": AccessDenied,
    "org.freedesktop.DBus.Error.InvalidArgs": InvalidArgument,
    "org.freedesktop.systemd1.UnitTypeNotSupported": InvalidArgument,
}


def from_dbus(error_name: str, text: str, unit: str | None) -> SystemdError:
    """Builds the typed exception for a D-Bus error reply."""
    if error_name == "org.freedesktop.DBus.Error.FileNotFound":
        return NoSuchUnit(text, unit=unit, dbus_error=error_name)
    return _ERROR_TYPES.get(error_name, BusError)(text, unit=unit, dbus_error=error_name)
