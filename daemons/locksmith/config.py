"""locksmithd's and locksmithctl's settings: Go-style flags, ``LOCKSMITHD_*`` variables,
and update.conf. Pure: files and the environment come in as text and mappings.

Precedence, lowest first: ``/usr/share/coreos/update.conf``, ``/etc/coreos/update.conf``,
the environment, flags. Upstream's unit loaded both files as ``EnvironmentFile=`` (so
/etc won) and its flags fell back to ``LOCKSMITHD_<FLAG>`` / ``LOCKSMITHCTL_<FLAG>``
variables; reading the files ourselves lets an error name the file and line.

Flags are Go's ``flag`` package habits: ``-name value``, ``-name=value``, one or two
dashes, booleans bare or ``=true``; ``-endpoint`` may repeat and takes comma lists.
The window variables keep their unprefixed legacy names (``REBOOT_WINDOW_START``), read
when the prefixed ones are unset, and must be set both or neither.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ..settings import GO_FALSE, GO_TRUE
from ..update.config import ConfigError, parse_env_file
from .decide import Strategy, StrategyError, parse_strategy
from .drain import DEFAULT_DRAIN_TIMEOUT, DrainConfigError, parse_drain_units
from .window import Window, WindowError, parse_go_duration, parse_window

DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379", "http://127.0.0.1:4001")
UPDATE_CONF = ("/usr/share/coreos/update.conf", "/etc/coreos/update.conf")

#: flag name -> takes a value (False: boolean)
FLAGS: dict[str, bool] = {
    "debug": False, "version": False, "endpoint": True, "etcd-keyfile": True,
    "etcd-certfile": True, "etcd-cafile": True, "etcd-username": True,
    "etcd-password": True, "group": True,
}
#: flags only the daemon takes (ours; upstream read these from the environment alone)
DAEMON_FLAGS: dict[str, bool] = {
    "reboot-strategy": True, "reboot-window-start": True, "reboot-window-length": True,
    "reclaim-after": True, "root": True, "drain-units": True, "drain-timeout": True,
    "reclaim-departed": True,
}


class UsageError(ValueError):
    """A flag error: locksmithctl exits 2 with the message."""


class HelpRequested(UsageError):
    """``-h``/``-help``/``--help``: print the usage and exit 0, as Go's flag package does."""


def flag_usage(prog: str, known: Mapping[str, bool]) -> str:
    """Go's default usage text: one line per flag, ``string`` after those taking a value."""
    lines = [f"Usage of {prog}:"]
    lines += [f"  -{name}" + (" string" if takes else "") for name, takes in sorted(known.items())]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Flags:
    values: dict[str, str] = dataclasses.field(default_factory=dict)
    endpoints: list[str] = dataclasses.field(default_factory=list)
    args: list[str] = dataclasses.field(default_factory=list)




def parse_flags(argv: Sequence[str], known: Mapping[str, bool]) -> Flags:
    """Go flag parsing: stops at the first non-flag argument or ``--``."""
    flags = Flags()
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        index += 1
        name, sep, value = arg.lstrip("-").partition("=")
        if name not in known:
            if name in ("h", "help"):
                raise HelpRequested("flag: help requested")
            raise UsageError(f"flag provided but not defined: -{name}")
        if not known[name]:
            if sep and value not in GO_TRUE | GO_FALSE:
                raise UsageError(f'invalid boolean value "{value}" for -{name}')
            value = "true" if not sep or value in GO_TRUE else "false"
        elif not sep:
            if index >= len(argv):
                raise UsageError(f"flag needs an argument: -{name}")
            value = argv[index]
            index += 1
        if name == "endpoint":
            flags.endpoints.extend(part.strip() for part in value.split(","))
        else:
            flags.values[name] = value
    flags.args = list(argv[index:])
    return flags


def env_fallback(flags: Flags, known: Mapping[str, bool], environ: Mapping[str, str],
                 prefix: str) -> None:
    """Fills unset flags from ``<PREFIX>_<FLAG>`` variables (upstream's flagsFromEnv)."""
    for name in known:
        value = environ.get(f"{prefix}_{name.upper().replace('-', '_')}", "")
        if not value:
            continue
        if name == "endpoint":
            if not flags.endpoints:
                flags.endpoints = [part.strip() for part in value.split(",")]
        elif name not in flags.values:
            flags.values[name] = value


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    group: str = ""
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    username: str | None = None
    password: str | None = None


def store_settings(flags: Flags) -> StoreSettings:
    """The store connection. A CA file alone is enough for TLS (upstream demanded a client
    certificate as soon as any TLS flag was set, Flatcar#948)."""
    v = flags.values
    if v.get("etcd-keyfile") and not v.get("etcd-certfile"):
        raise UsageError("-etcd-keyfile needs -etcd-certfile")
    return StoreSettings(
        endpoints=tuple(flags.endpoints) or DEFAULT_ENDPOINTS,
        group=v.get("group", ""),
        cafile=v.get("etcd-cafile") or None, certfile=v.get("etcd-certfile") or None,
        keyfile=v.get("etcd-keyfile") or None, username=v.get("etcd-username") or None,
        password=v.get("etcd-password") or None,
    )


@dataclasses.dataclass(frozen=True)
class DaemonSettings:
    strategy: Strategy
    window: Window | None
    window_text: tuple[str, str] | None
    store: StoreSettings
    reclaim_after: float | None   # seconds; None = never reclaim automatically
    root: str
    drain_units: tuple[str, ...] = ()
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    #: seconds a holder gone from fleet's machine list must also not have renewed before
    #: it is reclaimed; None = never reclaim departed machines automatically
    reclaim_departed: float | None = None


def _layer(files: Sequence[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for source, text in files:
        for key, setting in parse_env_file(text, source).items():
            merged[key] = setting.value
    return merged


def daemon_settings(argv: Sequence[str], environ: Mapping[str, str],
                    files: Sequence[tuple[str, str]]) -> DaemonSettings:
    """Everything locksmithd runs with; ``files`` are (path, text) in precedence order.

    Raises UsageError for flags and ConfigError for values, both naming the setting.
    """
    known = {**FLAGS, **DAEMON_FLAGS}
    flags = parse_flags(argv, known)
    if flags.args:
        raise UsageError(f"unexpected argument {flags.args[0]!r}")
    # update.conf lines count as environment, as upstream's EnvironmentFile= made them
    conf = {**_layer(files), **{k: v for k, v in environ.items() if v != ""}}
    env_fallback(flags, known, conf, "LOCKSMITHD")

    def pick(flag: str, *names: str) -> str:
        if flag in flags.values:
            return flags.values[flag]
        for name in names:
            if conf.get(name):
                return conf[name]
        return ""

    try:
        strategy = parse_strategy(pick("reboot-strategy", "REBOOT_STRATEGY"))
    except StrategyError as err:
        raise ConfigError(f"REBOOT_STRATEGY: {err}") from None
    start = pick("reboot-window-start", "LOCKSMITHD_REBOOT_WINDOW_START", "REBOOT_WINDOW_START")
    length = pick("reboot-window-length", "LOCKSMITHD_REBOOT_WINDOW_LENGTH",
                  "REBOOT_WINDOW_LENGTH")
    if bool(start) != bool(length):
        raise ConfigError("Either both or neither $REBOOT_WINDOW_START and "
                          "$REBOOT_WINDOW_LENGTH must be set")
    window = None
    if start:
        try:
            window = parse_window(start, length)
        except WindowError as err:
            raise ConfigError(f"Error parsing reboot window: {err}") from None
    def duration(flag: str, name: str, *, zero_ok: bool = False) -> float | None:
        text = pick(flag, name)
        if not text:
            return None
        try:
            seconds = parse_go_duration(text).total_seconds()
        except WindowError as err:
            raise ConfigError(f"{name}: {err}") from None
        if seconds < 0 or (seconds == 0 and not zero_ok):
            raise ConfigError(f"{name}: must be a positive duration")
        return seconds

    reclaim_after = duration("reclaim-after", "LOCKSMITHD_RECLAIM_AFTER")
    reclaim_departed = duration("reclaim-departed", "LOCKSMITHD_RECLAIM_DEPARTED",
                                zero_ok=True)
    drain_timeout = duration("drain-timeout", "LOCKSMITHD_DRAIN_TIMEOUT")
    try:
        drain_units = parse_drain_units(pick("drain-units", "LOCKSMITHD_DRAIN_UNITS"))
    except DrainConfigError as err:
        raise ConfigError(f"LOCKSMITHD_DRAIN_UNITS: {err}") from None
    return DaemonSettings(strategy, window, (start, length) if start else None,
                          store_settings(flags), reclaim_after,
                          flags.values.get("root", "/"), drain_units,
                          DEFAULT_DRAIN_TIMEOUT if drain_timeout is None else drain_timeout,
                          reclaim_departed)
