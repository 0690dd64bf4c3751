"""fleetd settings from ``/etc/fleet/fleet.conf``, ``FLEET_*`` variables and flags.

Names and defaults are fleet's, so an existing fleet.conf keeps working. Flags win over
the environment, which wins over the file, which wins over defaults. A bad value is an
error naming the key and where it came from (file line, variable or flag); nothing
starts with a half-read configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from flotilla.daemons.settings import (
    Option,
    SettingsError,
    collect,
    parse_bool,
    parse_duration,
)

from .model import UnitError, parse_metadata

DEFAULT_CONFIG = "/etc/fleet/fleet.conf"


class ConfigError(ValueError):
    pass


def _list(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [item.strip().strip('"') for item in text.split(",") if item.strip().strip('"')]


@dataclass
class FleetConfig:
    verbosity: int = 0
    etcd_servers: list[str] = field(
        default_factory=lambda: ["http://127.0.0.1:2379", "http://127.0.0.1:4001"])
    etcd_username: str = ""
    etcd_password: str = ""
    etcd_keyfile: str = ""
    etcd_certfile: str = ""
    etcd_cafile: str = ""
    etcd_key_prefix: str = "/_coreos.com/fleet/"
    etcd_request_timeout: float = 1.0
    engine_reconcile_interval: float = 2.0
    public_ip: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    agent_ttl: float = 30.0
    units_directory: str = "/run/fleet/units/"
    systemd_user: bool = False
    token_limit: int = 100
    disable_engine: bool = False
    disable_watches: bool = False
    # Flotilla additions
    machine_id: str = ""
    systemd: str = "dbus"  # dbus | standin (tests and benchmarks only)
    standin_state_file: str = ""
    api_socket: str = "/var/run/fleet.sock"
    api_socket_mode: int = 0o600
    api_tcp: str = ""  # host:port, empty = no TCP listener

    def apply(self, key: str, raw: str, origin: str) -> None:
        """Set one setting from its text form; errors name the key and the origin."""
        try:
            if key in ("verbosity", "token_limit"):
                value: object = int(raw)
            elif key == "api_socket_mode":
                value = int(raw, 8)
            elif key in ("etcd_request_timeout", "engine_reconcile_interval", "agent_ttl"):
                value = parse_duration(raw)
                if value < 0:
                    raise ValueError(f"invalid duration {raw!r}: must not be negative")
            elif key == "etcd_servers":
                value = _list(raw)
                if not value:
                    raise ValueError("empty server list")
            elif key == "metadata":
                value = parse_metadata(raw)
            elif key in ("systemd_user", "disable_engine", "disable_watches"):
                value = parse_bool(raw)
            elif key == "systemd":
                if raw not in ("dbus", "standin"):
                    raise ValueError("must be dbus or standin")
                value = raw
            elif key in {f.name for f in fields(self)}:
                value = raw.strip().strip('"')
            elif key in ("verify_units", "authorized_keys_file", "enable_grpc"):
                return  # deprecated in fleet; accepted and ignored
            else:
                raise ConfigError(f"{origin}: unknown setting {key!r}")
        except (ValueError, UnitError) as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"{origin}: {key}: {error}") from None
        if key in ("agent_ttl", "engine_reconcile_interval") and value <= 0:  # type: ignore[operator]
            raise ConfigError(f"{origin}: {key}: must be positive")
        setattr(self, key, value)


SETTING_NAMES = [f.name for f in fields(FleetConfig)]
#: Deprecated in fleet: accepted in fleet.conf and ignored.
DEPRECATED_KEYS = frozenset({"verify_units", "authorized_keys_file", "enable_grpc"})
_BOOL_SETTINGS = ("systemd_user", "disable_engine", "disable_watches")

#: fleet's flags are its setting names (``-agent_ttl=10s`` or ``--agent_ttl 10s``), the
#: variables ``FLEET_`` plus the name in capitals; booleans may stand alone, as Go's.
OPTIONS = [
    Option("config", help="path to fleet.conf", flag_only=True),
    Option("version", help="print the version and exit", is_flag=True, flag_only=True),
    *(Option(name, help=f"fleet setting {name}", is_flag=name in _BOOL_SETTINGS)
      for name in SETTING_NAMES),
]
HELP_FLAGS = ("-h", "-help", "--help")


def usage() -> str:
    lines = ["usage: fleetd [flags]  (flags take one or two dashes)"]
    lines += [f"  -{opt.name}  {opt.help}" for opt in OPTIONS]
    return "\n".join(lines)


def load_config(argv: Sequence[str] | None = None,
                environ: Mapping[str, str] | None = None) -> tuple[FleetConfig, argparse.Namespace]:
    """fleet.conf < ``FLEET_*`` variables < flags, by daemons/settings' one rule; the
    winner of each is checked by :meth:`FleetConfig.apply`, naming key and origin."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in HELP_FLAGS for arg in argv):
        print(usage())
        raise SystemExit(0)
    try:
        given = collect(OPTIONS, argv, environ=environ, env_prefix="FLEET_",
                        config_file=Path(DEFAULT_CONFIG), config_flag="config",
                        ignored_file_keys=DEPRECATED_KEYS)
    except SettingsError as error:
        raise ConfigError(str(error)) from None
    config = FleetConfig()
    for name in SETTING_NAMES:
        if name in given:
            raw, origin = given[name]
            config.apply(name, raw, origin)
    try:
        version = "version" in given and parse_bool(given["version"][0])
    except ValueError as error:
        raise ConfigError(f"--version: {error}") from None
    config_path = given["config"][0] if "config" in given else None
    return config, argparse.Namespace(config=config_path, version=version)


def machine_id(config: FleetConfig) -> str:
    if config.machine_id:
        return config.machine_id
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with open(candidate) if Path(candidate).is_file() else open(os.devnull) as handle:
            text = handle.read().strip()
            if text:
                return text
    raise ConfigError("machine_id: /etc/machine-id is empty and no machine_id was set")
