"""Where the update engine learns who it is and whom to ask: update.conf and the release file.

The files and keys are update_engine's, so existing machines' settings keep working.
For each key the first file that sets it wins, in this order: ``/etc/coreos/update.conf``,
``/etc/flatcar/update.conf``, ``/usr/share/coreos/update.conf``,
``/usr/share/flatcar/update.conf``, then the release files (``COREOS_RELEASE_*`` or
``FLATCAR_RELEASE_*``); the OEM comes from ``/etc/oem-release`` or
``/usr/share/oem/oem-release``. ``SERVER=disabled`` turns updates off, as Flatcar
documents. Keys of ours, for what upstream hard-coded: ``CHECK_INITIAL_DELAY``,
``CHECK_INTERVAL``, ``CHECK_FUZZ`` (the schedule), ``MARK_GOOD_DELAY`` (upstream's 45 s),
``HEALTH_CHECK_UNITS`` (units that must be active before a new /usr is marked good) and
``SERVER_CA_FILE`` (a CA bundle for a self-hosted server), ``USR_DEVICE`` and
``BOOTED_USR`` (the disk holding the USR slots and the running slot, where
``/proc/cmdline`` cannot say: test machines and containers); durations are Go-style
(``45s``, ``1h30m``) or plain seconds.

Parsing is pure: the shell reads the files and passes their text in.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence

from ..settings import parse_duration
from .omaha import DEFAULT_APP_ID
from .schedule import ScheduleConfig

CONFIG_FILES = (
    "/etc/coreos/update.conf",
    "/etc/flatcar/update.conf",
    "/usr/share/coreos/update.conf",
    "/usr/share/flatcar/update.conf",
    "/usr/share/coreos/release",
    "/usr/share/flatcar/release",
)
OEM_FILES = ("/etc/oem-release", "/usr/share/oem/oem-release")
DEFAULT_GROUP = "stable"
DISABLED = "disabled"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the file, line and key."""


@dataclasses.dataclass(frozen=True)
class Setting:
    value: str
    source: str
    line: int

    def where(self, key: str) -> str:
        return f"{self.source}:{self.line}: {key}"


def parse_env_file(text: str, source: str) -> dict[str, Setting]:
    """``KEY=value`` lines as systemd EnvironmentFile and os-release read them."""
    values: dict[str, Setting] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigError(f"{source}:{number}: expected KEY=value, got {raw.strip()!r}")
        try:
            words = shlex.split(value, comments=False, posix=True)
        except ValueError as err:
            raise ConfigError(f"{source}:{number}: {key}: {err}") from err
        values[key] = Setting(" ".join(words), source, number)
    return values


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
    """Everything the engine takes from its files."""

    server: str | None
    group: str
    version: str
    board: str
    app_id: str
    oem: str = ""
    oem_version: str = ""
    machine_alias: str = ""
    download_user: str = ""
    download_password: str = ""
    server_ca_file: str = ""
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    mark_good_delay: float = 45.0
    health_check_units: tuple[str, ...] = ()
    usr_device: str = ""
    booted_usr: str = ""

    @property
    def updates_disabled(self) -> bool:
        return self.server is None


def _first(files: Sequence[Mapping[str, Setting]], *keys: str) -> tuple[str, Setting] | None:
    for values in files:
        for key in keys:
            if key in values:
                return key, values[key]
    return None


def load(
    files: Sequence[tuple[str, str]], oem_files: Sequence[tuple[str, str]] = ()
) -> UpdateConfig:
    """Build the configuration from ``(path, text)`` pairs in precedence order."""
    parsed = [parse_env_file(text, path) for path, text in files]
    oem = [parse_env_file(text, path) for path, text in oem_files]

    def get(*keys: str, default: str = "") -> str:
        found = _first(parsed, *keys)
        return found[1].value if found else default

    def duration(key: str, default: float) -> float:
        found = _first(parsed, key)
        if found is None:
            return default
        try:
            seconds = parse_duration(found[1].value)
        except ValueError as err:
            raise ConfigError(f"{found[1].where(key)}: {err}") from err
        if seconds < 0:
            raise ConfigError(f"{found[1].where(key)}: must not be negative")
        return seconds

    server = get("SERVER")
    version = get("COREOS_RELEASE_VERSION", "FLATCAR_RELEASE_VERSION")
    if not version:
        raise ConfigError("no release version: COREOS_RELEASE_VERSION is set in none of "
                          + ", ".join(path for path, _ in files))
    defaults = ScheduleConfig()
    try:
        schedule = ScheduleConfig(
            initial=duration("CHECK_INITIAL_DELAY", defaults.initial),
            period=duration("CHECK_INTERVAL", defaults.period),
            fuzz=duration("CHECK_FUZZ", defaults.fuzz),
            max_backoff=max(duration("CHECK_INTERVAL", defaults.period), defaults.max_backoff),
        )
    except ValueError as err:
        raise ConfigError(f"schedule: {err}") from err
    oem_found = _first(oem, "ID")
    oem_version = _first(oem, "VERSION_ID")
    return UpdateConfig(
        server=None if server in ("", DISABLED) else server,
        group=get("GROUP", default=DEFAULT_GROUP),
        version=version,
        board=get("COREOS_RELEASE_BOARD", "FLATCAR_RELEASE_BOARD", default="amd64-usr"),
        app_id=get("COREOS_RELEASE_APPID", "FLATCAR_RELEASE_APPID", default=DEFAULT_APP_ID),
        oem=oem_found[1].value if oem_found else "",
        oem_version=oem_version[1].value if oem_version else "",
        machine_alias=get("MACHINE_ALIAS"),
        download_user=get("DOWNLOAD_USER"),
        download_password=get("DOWNLOAD_PASSWORD"),
        server_ca_file=get("SERVER_CA_FILE"),
        schedule=schedule,
        mark_good_delay=duration("MARK_GOOD_DELAY", 45.0),
        health_check_units=tuple(get("HEALTH_CHECK_UNITS").split()),
        usr_device=get("USR_DEVICE"),
        booted_usr=get("BOOTED_USR"),
    )
