"""fleetd settings from ``/etc/fleet/fleet.conf``, ``FLEET_*`` variables and flags.

Names and defaults are fleet's, so an existing fleet.conf keeps working. Flags win over
the environment, which wins over the file, which wins over defaults. A bad value is an
error naming the key and where it came from (file line, variable or flag); nothing
starts with a half-read configuration.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from .model import UnitError, parse_metadata

DEFAULT_CONFIG = "/etc/fleet/fleet.conf"


class ConfigError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """``30s``, ``1m30s``, ``500ms``, ``2`` (seconds) → seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total = 0.0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    pos = 0
    for match in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * units[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}")
    return total


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on", "t"):
        return True
    if lowered in ("0", "false", "no", "off", "f", ""):
        return False
    raise ValueError(f"invalid boolean {text!r}")


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
            elif key == "etcd_servers":
                value = _list(raw)
                if not value:
                    raise ValueError("empty server list")
            elif key == "metadata":
                value = parse_metadata(raw)
            elif key in ("systemd_user", "disable_engine", "disable_watches"):
                value = _bool(raw)
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


def read_file(config: FleetConfig, path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            continue  # fleet.conf has no sections; tolerate a header
        key, sep, value = stripped.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{number}: expected key=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]  # fleet.conf quotes every string: agent_ttl="30s"
        config.apply(key.strip(), value, f"{path}:{number}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetd", description="fleet engine and agent")
    parser.add_argument("-config", "--config", default=None, help="path to fleet.conf")
    parser.add_argument("-version", "--version", action="store_true")
    for name in SETTING_NAMES:
        parser.add_argument(f"-{name}", f"--{name}", dest=name, default=None,
                            help=f"fleet setting {name}")
    return parser


def load_config(argv: Sequence[str] | None = None,
                environ: Mapping[str, str] | None = None) -> tuple[FleetConfig, argparse.Namespace]:
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    config = FleetConfig()
    path = Path(args.config) if args.config else Path(DEFAULT_CONFIG)
    if path.is_file():
        read_file(config, path)
    elif args.config:
        raise ConfigError(f"{path}: config file not found")
    for name in SETTING_NAMES:
        variable = f"FLEET_{name.upper()}"
        if variable in environ:
            config.apply(name, environ[variable], variable)
    for name in SETTING_NAMES:
        value = getattr(args, name)
        if value is not None:
            config.apply(name, value, f"--{name}")
    return config, args


def machine_id(config: FleetConfig) -> str:
    if config.machine_id:
        return config.machine_id
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with open(candidate) if Path(candidate).is_file() else open(os.devnull) as handle:
            text = handle.read().strip()
            if text:
                return text
    raise ConfigError("machine_id: /etc/machine-id is empty and no machine_id was set")
