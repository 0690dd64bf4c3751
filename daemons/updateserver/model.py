"""The update server's things: applications, packages, channels, groups and instances.

Plain frozen values with no I/O. The numbering and spelling of instance statuses are
Nebraska's (its dashboard, its API and people's scripts read them), and group policy fields
carry Nebraska's names so the REST API can hand them out unchanged. Durations are seconds
and times are seconds since the epoch (UTC): the store keeps them as numbers and the policy
core compares them without a clock of its own.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re


class InstanceStatus(enum.IntEnum):
    """Nebraska's instance statuses (``types/instance.go``), numbered as on its wire."""

    UNDEFINED = 1
    UPDATE_GRANTED = 2
    ERROR = 3
    COMPLETE = 4
    INSTALLED = 5
    DOWNLOADED = 6
    DOWNLOADING = 7
    ON_HOLD = 8

    @property
    def label(self) -> str:
        """The word the dashboard and the API show for the status."""
        return self.name.lower().replace("_", " ")


#: Statuses in which an instance is between a grant and its reboot: no new grant then.
IN_FLIGHT = frozenset({InstanceStatus.DOWNLOADING, InstanceStatus.DOWNLOADED,
                       InstanceStatus.INSTALLED})

#: Nebraska's "unlimited" rate: a limit this high is no limit (outside safe mode).
UNLIMITED_UPDATES = 900_000


@dataclasses.dataclass(frozen=True)
class Application:
    """An Omaha application; ``id`` is the app id clients send (the OS image's for Flatcar)."""

    id: str
    name: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class ExtraFile:
    """A further ``<package>`` of a manifest (a sysext or OEM payload)."""

    name: str
    size: int
    sha1_base64: str = ""
    sha256_base64: str = ""


@dataclasses.dataclass(frozen=True)
class Package:
    """One version of an application's payload and its postinstall action's attributes.

    ``url`` is the codebase clients fetch ``filename`` from; empty means this server stores
    and serves the file itself. ``channels_blacklist`` names channels that must never
    offer the package even when pointed at it.
    """

    id: str
    app_id: str
    version: str
    filename: str
    size: int
    sha1_base64: str = ""
    sha256_base64: str = ""
    url: str = ""
    description: str = ""
    channels_blacklist: tuple[str, ...] = ()
    extra_files: tuple[ExtraFile, ...] = ()
    is_delta: bool = False
    disable_payload_backoff: bool = True
    needs_admin: bool = False
    metadata_signature_rsa: str = ""
    metadata_size: str = ""
    chromeos_version: str = ""
    deadline: str = ""


@dataclasses.dataclass(frozen=True)
class Floor:
    """A version every instance must pass through on its way to the channel's package."""

    package_id: str
    reason: str = "Required intermediate version"


@dataclasses.dataclass(frozen=True)
class Channel:
    """A named stream of an application pointing at its current package."""

    id: str
    app_id: str
    name: str
    package_id: str | None = None
    color: str = ""
    floors: tuple[Floor, ...] = ()


@dataclasses.dataclass(frozen=True)
class OfficeHours:
    """When an "office hours only" group may update, in the group's time zone.

    ``start`` and ``end`` are minutes after midnight; a window whose end is not after its
    start runs across midnight and belongs to the day it started on, so a Friday 22:00-06:00
    window is open until Saturday 06:00 and Sunday's is closed. ``weekdays`` counts Monday
    as 0 (Python's ``weekday()``). The default is Nebraska's fixed Mon-Fri 09:00-17:00.
    """

    start: int = 9 * 60
    end: int = 17 * 60
    weekdays: frozenset[int] = frozenset(range(5))


@dataclasses.dataclass(frozen=True)
class Policy:
    """A group's rollout policy, Nebraska's fields, durations in seconds."""

    updates_enabled: bool = True
    safe_mode: bool = False
    office_hours: bool = False
    timezone: str = "UTC"
    max_updates_per_period: int = 999_999
    period_interval: float = 60.0
    update_timeout: float = 3600.0
    office_window: OfficeHours = OfficeHours()


@dataclasses.dataclass(frozen=True)
class Group:
    """Instances that follow one channel under one policy; ``track`` is what they send."""

    id: str
    app_id: str
    name: str
    channel_id: str | None
    track: str
    policy: Policy = Policy()
    description: str = ""


@dataclasses.dataclass(frozen=True)
class InstanceApp:
    """What the server knows of one instance's copy of one application."""

    instance_id: str
    app_id: str
    group_id: str
    version: str
    status: InstanceStatus = InstanceStatus.UNDEFINED
    last_check: float | None = None
    last_update_granted: float | None = None
    last_update_version: str = ""
    update_in_progress: bool = False


_PART = re.compile(r"(\d+)|([^\d.+-]+)")


@functools.lru_cache(maxsize=4096)  # a fleet runs a handful of versions; checks ask often
def version_key(version: str) -> tuple:
    """A sort key ordering versions as semver does for Flatcar's ``3510.2.1`` shapes.

    Dotted numeric parts compare as numbers, a pre-release (``-rc1``) sorts before its
    release, build metadata (``+...``) is ignored. Anything unparsable sorts lowest, so a
    garbled client version is offered the channel's package rather than nothing.
    """
    core, _, _ = version.strip().partition("+")
    release, dash, pre = core.partition("-")
    parts: list[tuple[int, int | str]] = []
    for piece in release.split("."):
        if not piece.isdigit():
            return ((), (0, ()))
        parts.append((0, int(piece)))
    while parts and parts[-1] == (0, 0):
        parts.pop()  # 1.0 == 1.0.0
    pre_key: tuple = (1,)
    if dash:
        pre_key = (0, tuple((0, int(n)) if n else (1, s) for n, s in _PART.findall(pre)))
    return (tuple(parts), pre_key)


def newer(a: str, b: str) -> bool:
    """True when version ``a`` is strictly after version ``b``."""
    return version_key(a) > version_key(b)
